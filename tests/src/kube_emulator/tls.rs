//! The emulator's certificate authority: it signs the serving certificate and
//! the client certificates tests authenticate with, and builds the rustls
//! server configuration (aws-lc-rs provider, ALPN `http/1.1` only) that asks
//! for an optional client certificate signed by it.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SigningKey,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What can go wrong creating or using a certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused to generate a key or certificate.
    #[error("Could not generate a key or certificate")]
    Generate(#[source] rcgen::Error),
    /// The CA certificate or key PEM given could not be parsed.
    #[error("The CA certificate or key PEM could not be read")]
    ParseCa(#[source] rcgen::Error),
    /// A subject alternative name is neither an IP address nor a DNS name.
    #[error("Subject alternative name {0:?} is neither an IP address nor a DNS name")]
    BadSan(String),
    /// rustls refused the configuration built from the certificates.
    #[error("The TLS server configuration was refused")]
    Config(#[source] rustls::Error),
    /// The client certificate verifier could not be built from the CA.
    #[error("The client certificate verifier could not be built from the CA")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// A generated certificate could not be re-read (an internal inconsistency).
    #[error("A generated certificate could not be re-read")]
    Reread,
}

/// A certificate authority: its certificate and signing key (cheap to clone; clones share the key).
#[derive(Clone)]
pub struct Ca {
    inner: Arc<CaInner>,
}

struct CaInner {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A fresh self-signed CA (ECDSA P-256) with the given common name.
    pub fn generate(common_name: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
        Ok(Ca::assemble(
            cert.pem(),
            cert.der().clone(),
            Issuer::new(params, key),
        ))
    }

    /// A CA from an existing certificate and PKCS#8 key, both PEM (to share one CA between emulators or runs).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(TlsError::ParseCa)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(TlsError::ParseCa)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| TlsError::ParseCa(rcgen::Error::CouldNotParseCertificate))?;
        Ok(Ca::assemble(cert_pem.to_string(), cert_der, issuer))
    }

    fn assemble(
        cert_pem: String,
        cert_der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    ) -> Ca {
        Ca {
            inner: Arc::new(CaInner {
                cert_pem,
                cert_der,
                issuer,
            }),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.inner.cert_pem.clone()
    }

    /// The CA's private key, PKCS#8 PEM (for `--ca-key` files; never log it).
    pub fn key_pem(&self) -> String {
        self.inner.issuer.key().serialize_pem()
    }

    /// A client certificate for `user` in `groups` (CN = user, one O per group), and its key; both PEM.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, user);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.inner.issuer)
            .map_err(TlsError::Generate)?;
        // rcgen's DistinguishedName keeps one value per attribute type, but
        // Kubernetes reads every O attribute as a group: rewrite the subject
        // with one O per group and sign the result again with the CA key.
        let der = if groups.is_empty() {
            cert.der().to_vec()
        } else {
            let subject = der::name(user, groups);
            der::replace_subject(cert.der(), &subject, self.inner.issuer.key())?
        };
        let pem = CertificateDer::from(der);
        Ok((pem_encode("CERTIFICATE", &pem), key.serialize_pem()))
    }

    /// A serving certificate for `sans` (IP addresses or DNS names) and its key.
    pub(crate) fn issue_server(
        &self,
        sans: &[String],
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => san
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| TlsError::BadSan(san.clone())),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.inner.issuer)
            .map_err(TlsError::Generate)?;
        let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|_| TlsError::Reread)?;
        Ok((cert.der().clone(), key_der))
    }

    /// The rustls server configuration: serving certificate for `sans`, optional client certificates signed by this CA.
    pub(crate) fn server_config(
        &self,
        sans: &[String],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.inner.cert_der.clone())
            .map_err(TlsError::Config)?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(TlsError::Verifier)?;
        let (cert, key) = self.issue_server(sans)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert, self.inner.cert_der.clone()], key)
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The user (CN) and groups (every O) of a verified client certificate.
pub(crate) fn client_identity(cert: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((user, groups))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Just enough DER to put a multi-O subject into a certificate rcgen made.
mod der {
    use super::{KeyPair, SigningKey, TlsError};

    const OID_CN: [u8; 3] = [0x55, 0x04, 0x03];
    const OID_O: [u8; 3] = [0x55, 0x04, 0x0a];

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    fn attribute(oid: &[u8], value: &str) -> Vec<u8> {
        let mut seq = tlv(0x06, oid);
        seq.extend(tlv(0x0c, value.as_bytes()));
        tlv(0x31, &tlv(0x30, &seq))
    }

    /// The DER Name `O=<group>...,CN=<user>`.
    pub(super) fn name(user: &str, groups: &[&str]) -> Vec<u8> {
        let mut rdns = Vec::new();
        for group in groups {
            rdns.extend(attribute(&OID_O, group));
        }
        rdns.extend(attribute(&OID_CN, user));
        tlv(0x30, &rdns)
    }

    /// Splits one TLV off the front of `input`: (whole element, rest).
    fn split(input: &[u8]) -> Option<(&[u8], &[u8])> {
        let first_len = *input.get(1)?;
        let (header, len) = if first_len < 0x80 {
            (2, first_len as usize)
        } else {
            let n = (first_len & 0x7f) as usize;
            let bytes = input.get(2..2 + n)?;
            (
                2 + n,
                bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize),
            )
        };
        let end = header.checked_add(len)?;
        Some((input.get(..end)?, input.get(end..)?))
    }

    fn content(element: &[u8]) -> Option<&[u8]> {
        let first_len = *element.get(1)?;
        let header = if first_len < 0x80 {
            2
        } else {
            2 + (first_len & 0x7f) as usize
        };
        element.get(header..)
    }

    /// The certificate `cert` with its subject replaced by `subject`, signed again with `key`.
    pub(super) fn replace_subject(
        cert: &[u8],
        subject: &[u8],
        key: &KeyPair,
    ) -> Result<Vec<u8>, TlsError> {
        let outer = content(cert).ok_or(TlsError::Reread)?;
        let (tbs, rest) = split(outer).ok_or(TlsError::Reread)?;
        let (sig_alg, _) = split(rest).ok_or(TlsError::Reread)?;
        // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, ...
        let mut fields = Vec::new();
        let mut cursor = content(tbs).ok_or(TlsError::Reread)?;
        while !cursor.is_empty() {
            let (field, next) = split(cursor).ok_or(TlsError::Reread)?;
            fields.push(field);
            cursor = next;
        }
        if fields.len() < 7 || fields[0].first() != Some(&0xa0) {
            return Err(TlsError::Reread);
        }
        let mut tbs_content = Vec::new();
        for (i, field) in fields.iter().enumerate() {
            tbs_content.extend_from_slice(if i == 5 { subject } else { field });
        }
        let new_tbs = tlv(0x30, &tbs_content);
        let signature = key.sign(&new_tbs).map_err(TlsError::Generate)?;
        let mut bits = vec![0u8];
        bits.extend(signature);
        let mut cert_content = new_tbs;
        cert_content.extend_from_slice(sig_alg);
        cert_content.extend(tlv(0x03, &bits));
        Ok(tlv(0x30, &cert_content))
    }
}
