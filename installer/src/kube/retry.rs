//! Bounded retries of Kubernetes API calls.
//!
//! An API server that is restarting or overloaded answers 429, 500, 502, 503
//! or 504, or drops the connection; one that is not there refuses it. Those
//! are worth another try after a pause; everything else (401, 403, 404, 409,
//! 422, a certificate that does not verify) is an answer and is returned at
//! once. [`retry`] runs a call until it succeeds, fails for good, or the
//! [`RetryPolicy`] runs out, and says how many attempts it made, so the
//! caller's error can say so too.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often and how patiently a call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Pause after the first failure; doubled after each further one.
    pub first_delay: Duration,
    /// Longest pause.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, pauses 0.1, 0.2, 0.4, 0.8 and 1.6 s (about 3 s in all).
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 6,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// A call that did not succeed.
#[derive(Debug)]
pub struct Failed {
    /// The last error.
    pub error: kube::Error,
    /// Attempts made (1 when the error was not worth retrying).
    pub attempts: u32,
    /// Whether the error was transient (the attempts ran out), not an answer.
    pub transient: bool,
    /// Time spent, pauses included.
    pub elapsed: Duration,
}

/// Runs `call` until it succeeds, fails with an answer, or `policy` runs out.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, mut call: F) -> Result<T, Failed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let start = Instant::now();
    let mut delay = policy.first_delay;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Ok(v) => return Ok(v),
            Err(error) => {
                let transient = is_transient(&error);
                if !transient || attempt >= policy.attempts.max(1) {
                    return Err(Failed {
                        error,
                        attempts: attempt,
                        transient,
                        elapsed: start.elapsed(),
                    });
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(policy.max_delay);
    }
}

/// Whether another attempt may succeed: a busy or failing server (429, 500,
/// 502, 503, 504), a connection that was refused, reset or dropped before
/// the answer. A certificate that does not verify is not transient.
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => network_failure(error),
        _ => false,
    }
}

/// Walks the error's sources: a dropped connection (hyper) or an I/O error
/// of the network kind is transient; an I/O error carrying invalid data (a
/// TLS failure) is not.
fn network_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut transient = false;
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::InvalidData | K::InvalidInput | K::PermissionDenied => return false,
                K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::TimedOut
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::AddrNotAvailable => transient = true,
                _ => {}
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_closed() || h.is_incomplete_message() || h.is_canceled() || h.is_timeout())
        {
            transient = true;
        }
        current = e.source();
    }
    transient
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("x", "y").with_code(code),
        ))
    }

    #[test]
    fn busy_servers_are_transient_answers_are_not() {
        for code in [429, 500, 502, 503, 504] {
            assert!(is_transient(&status(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(!is_transient(&status(code)), "{code}");
        }
        let refused = kube::Error::Service(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(is_transient(&refused));
        let tls = kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        )));
        assert!(!is_transient(&tls));
    }

    #[tokio::test]
    async fn retries_until_success_or_the_attempts_run_out() {
        let policy = RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let mut calls = 0;
        let ok = retry(&policy, || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(status(503)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(ok.ok(), Some(3));
        let mut calls = 0;
        let failed = retry(&policy, || {
            calls += 1;
            async { Err::<(), _>(status(500)) }
        })
        .await
        .expect_err("always 500");
        assert_eq!((failed.attempts, failed.transient, calls), (4, true, 4));
        let mut calls = 0;
        let failed = retry(&policy, || {
            calls += 1;
            async { Err::<(), _>(status(401)) }
        })
        .await
        .expect_err("401");
        assert_eq!((failed.attempts, failed.transient, calls), (1, false, 1));
    }
}
