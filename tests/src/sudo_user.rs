//! A throwaway local user with a password and a sudoers rule that asks for it.
//!
//! Tests of privileged execution through sudo connect as this user (with the
//! fleet's client key, since the fleet's AuthorizedKeysFile serves every
//! user). Creating it needs root: `useradd -m`, `chpasswd`, and a drop-in
//! `/etc/sudoers.d/edgeforge-test-<name>` (`<name> ALL=(ALL) ALL`, so sudo
//! always asks for the password). Dropping it runs `userdel -r` and removes
//! the drop-in. Meant for the throwaway CI machine only.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

static ACCOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A local user whose sudo requires a password.
pub struct SudoUser {
    name: String,
    password: String,
    sudoers: PathBuf,
}

impl SudoUser {
    /// Creates the user with a random name and password.
    pub fn create() -> Result<SudoUser> {
        // useradd/userdel lock /etc/passwd; parallel tests take turns.
        let _turn = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        let tag = random_tag();
        let name = format!("eft{}", &tag[..8]);
        let password = format!("pw-{tag}");
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", &name]))?;
        let user = SudoUser {
            sudoers: PathBuf::from(format!("/etc/sudoers.d/edgeforge-test-{name}")),
            name,
            password,
        };
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .context("running chpasswd")?;
        if let Some(stdin) = chpasswd.stdin.as_mut() {
            writeln!(stdin, "{}:{}", user.name, user.password)?;
        }
        if !chpasswd.wait()?.success() {
            bail!("chpasswd failed for {}", user.name);
        }
        fs::write(
            &user.sudoers,
            format!("Defaults:{0} !lecture\n{0} ALL=(ALL) ALL\n", user.name),
        )?;
        fs::set_permissions(&user.sudoers, fs::Permissions::from_mode(0o440))?;
        Ok(user)
    }

    /// The user name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sudo password (tests grep error output for it).
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl Drop for SudoUser {
    fn drop(&mut self) {
        let _turn = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        let _ = fs::remove_file(&self.sudoers);
        let _ = Command::new("userdel")
            .args(["-r", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn random_tag() -> String {
    let mut buf = [0u8; 8];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut buf);
    }
    hex::encode(buf)
}
