//! The shell-backed system kinds: command, script, file, lineinfile,
//! package, service, sysctl, kernel_module, user, hostname.
//!
//! Each builds one POSIX `sh` body that checks and changes in a single round
//! trip through the host's framed shell (see [`super::super::shell`]): it
//! calls `ef_do CMD...` for each change, so check mode runs the checks and
//! none of the changes. Every value is quoted with [`quote`]; names that end
//! up in commands are checked against the characters they may hold.

use serde::{Deserialize, Serialize};

use super::{Content, Mode, Params, Presence, ScalarString, StepEnv, StepError, StepReport};
use crate::facts::Facts;
use crate::playbook::OneOrMany;
use crate::sh::quote;

/// Parameters of `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// The command line, run by `sh -c`.
    pub cmd: String,
    /// Skip when this path exists.
    #[serde(default)]
    pub creates: Option<String>,
    /// Skip unless this path exists.
    #[serde(default)]
    pub removes: Option<String>,
    /// Skip when this command succeeds.
    #[serde(default)]
    pub unless: Option<String>,
    /// Run in this directory.
    #[serde(default)]
    pub chdir: Option<String>,
}

/// Parameters of `probe`: a read-only command run for its output (to
/// `register` or `publish`), never a change; a failing command fails the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeParams {
    /// The command line, run by `sh -c`; it must not change the host.
    pub cmd: String,
}

/// Parameters of `script`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptParams {
    /// A file: relative paths are in the data directory, absolute ones on the controller.
    #[serde(default)]
    pub src: Option<String>,
    /// The script text itself.
    #[serde(default)]
    pub inline: Option<String>,
    /// The interpreter (default `sh`); it reads the script on standard input.
    #[serde(default = "default_sh")]
    pub interpreter: String,
    /// Skip when this path exists.
    #[serde(default)]
    pub creates: Option<String>,
    /// Skip when this command succeeds.
    #[serde(default)]
    pub unless: Option<String>,
}

/// What `file` makes of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// A directory (created with parents).
    #[default]
    Directory,
    /// An existing regular file (only mode and owner are set).
    File,
    /// A symlink to `src`.
    Symlink,
    /// Nothing: removed if present.
    Absent,
    /// A file, created empty if missing.
    Touch,
}

/// Parameters of `file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileParams {
    /// Absolute path.
    pub path: String,
    /// What to make of it (default `directory`).
    #[serde(default)]
    pub state: FileState,
    /// Symlink target (for `state: symlink`).
    #[serde(default)]
    pub src: Option<String>,
    /// Permission bits.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `user` or `user:group`.
    #[serde(default)]
    pub owner: Option<String>,
}

/// Parameters of `lineinfile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineParams {
    /// The file.
    pub path: String,
    /// The line (required for `present`).
    #[serde(default)]
    pub line: Option<String>,
    /// An extended regex: the last matching line is replaced (or, for `absent`, all are removed).
    #[serde(default)]
    pub regexp: Option<String>,
    /// Present (default) or absent.
    #[serde(default)]
    pub state: Presence,
    /// Insert after the last line matching this regex (default: at the end).
    #[serde(default)]
    pub insertafter: Option<String>,
    /// Create the file when missing (default true).
    #[serde(default = "yes")]
    pub create: bool,
}

/// Parameters of `package`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageParams {
    /// One name or a list, installed or removed in one call.
    pub name: OneOrMany,
    /// Present (default) or absent.
    #[serde(default)]
    pub state: Presence,
    /// Refresh the package index before installing (apt: also when it was never fetched).
    #[serde(default)]
    pub update_cache: bool,
}

/// What `service` does to a unit's running state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Running.
    Started,
    /// Not running.
    Stopped,
    /// Restarted now (always a change).
    Restarted,
    /// Reloaded now (always a change).
    Reloaded,
}

/// Parameters of `service`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceParams {
    /// Unit name, e.g. `chrony` or `k3s.service`.
    pub name: String,
    /// Enabled at boot (unchanged when absent).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Running state (unchanged when absent).
    #[serde(default)]
    pub state: Option<ServiceState>,
    /// Run `systemctl daemon-reload` first.
    #[serde(default)]
    pub daemon_reload: bool,
    /// Seconds `systemctl start|restart` may take (a `Type=notify` unit
    /// blocks until it reports ready); unlimited when absent.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// Parameters of `sysctl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlParams {
    /// Key, e.g. `net.ipv4.ip_forward`.
    pub name: String,
    /// Value, e.g. `1`.
    pub value: ScalarString,
    /// Where it is persisted (default /etc/sysctl.d/99-edgeforge.conf).
    #[serde(default = "default_sysctl_file")]
    pub file: String,
}

/// Parameters of `kernel_module`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleParams {
    /// Module name, e.g. `br_netfilter`.
    pub name: String,
    /// Where it is persisted (default /etc/modules-load.d/edgeforge.conf).
    #[serde(default = "default_modules_file")]
    pub file: String,
}

/// Parameters of `user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserParams {
    /// Login name.
    pub name: String,
    /// Supplementary groups (created when missing).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Login shell.
    #[serde(default)]
    pub shell: Option<String>,
    /// A system account.
    #[serde(default)]
    pub system: bool,
    /// An SSH public key for ~/.ssh/authorized_keys.
    #[serde(default)]
    pub authorized_key: Option<String>,
}

/// Parameters of `hostname`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostnameParams {
    /// The host name.
    pub name: String,
}

// ---- the kinds ----

impl Params for CommandParams {
    const KEY: &'static str = "command";
    const RUNTIME_STATE: bool = true;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let mut guards = Vec::new();
        if let Some(c) = &self.creates {
            guards.push(format!("[ -e {} ]", quote(c)));
        }
        if let Some(r) = &self.removes {
            guards.push(format!("[ ! -e {} ]", quote(r)));
        }
        if let Some(u) = &self.unless {
            guards.push(format!("( {u} ) >/dev/null 2>&1"));
        }
        // The command runs in a subshell through `eval`: a fork, not an exec, so
        // its text (which may hold a rendered secret) never shows in a process list.
        let cmd = match &self.chdir {
            Some(d) => format!("cd {} && {}", quote(d), self.cmd),
            None => self.cmd.clone(),
        };
        let run = format!(
            "ef_cmd={}\nef_run() {{ ( eval \"$ef_cmd\" ); }}\nef_do ef_run",
            quote(&cmd)
        );
        env.run_framed(&guarded(&guards, &run), None, None).await
    }
}

impl Params for ProbeParams {
    const KEY: &'static str = "probe";
    const RERUNNABLE: bool = true;
    // A query of the host: never skipped by the journal.
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        // Through `eval` in a subshell, like `command`: its text never shows in a process list.
        let body = format!(
            "ef_cmd={}\n( eval \"$ef_cmd\" ) || exit $?",
            quote(&self.cmd)
        );
        env.run_framed(&body, None, None).await
    }
}

impl Params for ScriptParams {
    const KEY: &'static str = "script";
    const RUNTIME_STATE: bool = true;

    fn content(&self, env: &StepEnv<'_>) -> Result<Option<Content>, StepError> {
        Ok(Some(match (&self.src, &self.inline) {
            (None, Some(c)) => Content::Bytes(c.clone().into_bytes()),
            (Some(src), None) => match super::place::local_content(env.data, src)? {
                Content::File { path, .. } => Content::Bytes(
                    std::fs::read(&path).map_err(|source| StepError::Local { path, source })?,
                ),
                bytes => bytes,
            },
            _ => {
                return Err(StepError::Invalid(
                    "script needs exactly one of `src` and `inline`".into(),
                ));
            }
        }))
    }

    async fn apply<'a>(
        &'a self,
        content: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let mut guards = Vec::new();
        if let Some(c) = &self.creates {
            guards.push(format!("[ -e {} ]", quote(c)));
        }
        if let Some(u) = &self.unless {
            guards.push(format!("( {u} ) </dev/null >/dev/null 2>&1"));
        }
        let flag = if matches!(self.interpreter.as_str(), "sh" | "bash" | "dash" | "ash") {
            "-s"
        } else {
            "-"
        };
        let body = guarded(
            &guards,
            &format!("ef_do {} {flag}", quote(&self.interpreter)),
        );
        let stdin = match content {
            Some(Content::Bytes(b)) => Some(b.as_slice()),
            _ => None,
        };
        env.run_framed(&body, stdin, None).await
    }
}

impl Params for FileParams {
    const KEY: &'static str = "file";
    const RERUNNABLE: bool = true;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        env.run_framed(&file_body(self)?, None, None).await
    }
}

impl Params for LineParams {
    const KEY: &'static str = "lineinfile";
    const RERUNNABLE: bool = true;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let line = self.line.as_deref();
        if self.state == Presence::Present && line.is_none() {
            return Err(StepError::Invalid(
                "lineinfile with state present needs `line`".into(),
            ));
        }
        if self.state == Presence::Absent && line.is_none() && self.regexp.is_none() {
            return Err(StepError::Invalid(
                "lineinfile with state absent needs `line` or `regexp`".into(),
            ));
        }
        let body = line_body(
            &self.path,
            line.unwrap_or(""),
            self.regexp.as_deref(),
            self.insertafter.as_deref(),
            self.state,
            self.create,
        );
        env.run_framed(&body, None, None).await
    }
}

impl Params for PackageParams {
    const KEY: &'static str = "package";

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        env.run_framed(&package_body(self, env.facts()?)?, None, None)
            .await
    }
}

impl Params for ServiceParams {
    const KEY: &'static str = "service";
    const RUNTIME_STATE: bool = true;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        env.run_framed(&service_body(self)?, None, None).await
    }
}

impl Params for SysctlParams {
    const KEY: &'static str = "sysctl";
    const RERUNNABLE: bool = true;
    const RUNTIME_STATE: bool = true;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        check_word("sysctl name", &self.name, |c| {
            c.is_ascii_alphanumeric() || "._-/".contains(c)
        })?;
        let value = &self.value.0;
        let re = format!(
            "^[[:space:]]*{}[[:space:]]*=",
            self.name.replace('.', "[.]")
        );
        let body = format!(
            "n={n}; v={v}\n\
             cur=$(sysctl -n \"$n\" 2>/dev/null | tr -s ' \\t' ' ')\n\
             want=$(printf '%s' \"$v\" | tr -s ' \\t' ' ')\n\
             [ \"$cur\" = \"$want\" ] || ef_do sysctl -q -w \"$n=$v\"\n{dir}\n{persist}",
            n = quote(&self.name),
            v = quote(value),
            dir = mkdir_parent(&self.file),
            persist = line_body(
                &self.file,
                &format!("{} = {}", self.name, value),
                Some(&re),
                None,
                Presence::Present,
                true
            ),
        );
        env.run_framed(&body, None, None).await
    }
}

impl Params for ModuleParams {
    const KEY: &'static str = "kernel_module";
    const RERUNNABLE: bool = true;
    const RUNTIME_STATE: bool = true;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        check_word("module name", &self.name, |c| {
            c.is_ascii_alphanumeric() || "_-".contains(c)
        })?;
        let sys = self.name.replace('-', "_");
        let body = format!(
            "[ -d /sys/module/{sys} ] || ef_do modprobe {n}\n{dir}\n{persist}",
            sys = quote(&sys),
            n = quote(&self.name),
            dir = mkdir_parent(&self.file),
            persist = line_body(&self.file, &self.name, None, None, Presence::Present, true),
        );
        env.run_framed(&body, None, None).await
    }
}

impl Params for UserParams {
    const KEY: &'static str = "user";

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        env.run_framed(&user_body(self)?, None, None).await
    }
}

impl Params for HostnameParams {
    const KEY: &'static str = "hostname";
    const RERUNNABLE: bool = true;
    const RUNTIME_STATE: bool = true;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        check_word("hostname", &self.name, |c| {
            c.is_ascii_alphanumeric() || "-.".contains(c)
        })?;
        let body = format!(
            "h={h}\n\
             if [ \"$(hostname)\" != \"$h\" ]; then\n\
             \x20 if command -v hostnamectl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then ef_do hostnamectl set-hostname \"$h\"; else ef_do hostname \"$h\"; fi\n\
             fi\n\
             [ \"$(cat /etc/hostname 2>/dev/null)\" = \"$h\" ] || ef_do sh -c 'printf \"%s\\n\" \"$1\" > /etc/hostname.ef-tmp && mv -f /etc/hostname.ef-tmp /etc/hostname' sh \"$h\"",
            h = quote(&self.name)
        );
        env.run_framed(&body, None, None).await
    }
}

// ---- the bodies ----

/// `if guard1 || guard2; then :; else change; fi`
fn guarded(guards: &[String], change: &str) -> String {
    if guards.is_empty() {
        change.to_string()
    } else {
        format!("if {}; then :; else {change}; fi", guards.join(" || "))
    }
}

fn mkdir_parent(file: &str) -> String {
    let dir = file
        .rsplit_once('/')
        .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
    format!("[ -d {d} ] || ef_do mkdir -p {d}", d = quote(dir))
}

fn check_word(what: &str, s: &str, ok: impl Fn(char) -> bool) -> Result<(), StepError> {
    if s.is_empty() || s.starts_with('-') || !s.chars().all(ok) {
        return Err(StepError::Invalid(format!(
            "{what} `{s}` has characters that are not allowed"
        )));
    }
    Ok(())
}

fn mode_owner(path_var: &str, mode: Option<Mode>, owner: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(m) = mode {
        out.push_str(&format!(
            "[ -e \"{path_var}\" ] && [ \"$(stat -c %a \"{path_var}\")\" = {m:o} ] || ef_do chmod {m:o} \"{path_var}\"\n",
            m = m.0
        ));
    }
    if let Some(o) = owner {
        let fmt = if o.contains(':') { "%U:%G" } else { "%U" };
        out.push_str(&format!(
            "[ -e \"{path_var}\" ] && [ \"$(stat -c {fmt} \"{path_var}\")\" = {o} ] || ef_do chown {o} \"{path_var}\"\n",
            o = quote(o)
        ));
    }
    out
}

fn file_body(p: &FileParams) -> Result<String, StepError> {
    if !p.path.starts_with('/') {
        return Err(StepError::Invalid(format!(
            "path `{}` must be absolute",
            p.path
        )));
    }
    let mut s = format!("p={}\n", quote(&p.path));
    match p.state {
        FileState::Directory => s.push_str("[ -d \"$p\" ] || ef_do mkdir -p \"$p\"\n"),
        FileState::File => s.push_str(
            "[ -f \"$p\" ] || { echo \"$p does not exist; use state: touch to create it\" >&2; exit 1; }\n",
        ),
        FileState::Touch => s.push_str("[ -e \"$p\" ] || ef_do touch \"$p\"\n"),
        FileState::Absent => {
            s.push_str("if [ -e \"$p\" ] || [ -L \"$p\" ]; then ef_do rm -rf \"$p\"; fi\n");
            return Ok(s);
        }
        FileState::Symlink => {
            let src = p
                .src
                .as_deref()
                .ok_or_else(|| StepError::Invalid("file with state symlink needs `src` (the target)".into()))?;
            s.push_str(&format!(
                "[ -L \"$p\" ] && [ \"$(readlink \"$p\")\" = {t} ] || ef_do ln -sfn {t} \"$p\"\n",
                t = quote(src)
            ));
            return Ok(s);
        }
    }
    s.push_str(&mode_owner("$p", p.mode, p.owner.as_deref()));
    Ok(s)
}

/// Ensures one line in a file; the file is rewritten to a temp name and renamed.
fn line_body(
    path: &str,
    line: &str,
    regexp: Option<&str>,
    insertafter: Option<&str>,
    state: Presence,
    create: bool,
) -> String {
    let mut s = format!(
        "f={f}; export EF_LINE={l} EF_RE={r} EF_IA={ia}\n\
         ef_rewrite() {{ t=\"$f.ef-tmp.$$\"; if cp -p \"$f\" \"$t\" && awk \"$1\" \"$f\" \"$f\" > \"$t\" && mv -f \"$t\" \"$f\"; then :; else rm -f \"$t\"; exit 1; fi; }}\n",
        f = quote(path),
        l = quote(line),
        r = quote(regexp.unwrap_or("")),
        ia = quote(insertafter.unwrap_or("")),
    );
    match state {
        Presence::Present => {
            if create {
                s.push_str("[ -e \"$f\" ] || ef_do touch \"$f\"\n");
            } else {
                s.push_str("[ -e \"$f\" ] || { echo \"$f does not exist\" >&2; exit 1; }\n");
            }
            s.push_str(
                "if [ -e \"$f\" ] && grep -Fxq -e \"$EF_LINE\" \"$f\"; then :\n\
                 elif [ -n \"$EF_RE\" ] && [ -e \"$f\" ] && grep -Eq -e \"$EF_RE\" \"$f\"; then\n\
                 \x20 ef_do ef_rewrite 'NR==FNR { if ($0 ~ ENVIRON[\"EF_RE\"]) last=FNR; next } FNR==last { print ENVIRON[\"EF_LINE\"]; next } { print }'\n\
                 else\n\
                 \x20 ef_do ef_rewrite 'NR==FNR { if (ENVIRON[\"EF_IA\"] != \"\" && $0 ~ ENVIRON[\"EF_IA\"]) last=FNR; next } { print } FNR==last { print ENVIRON[\"EF_LINE\"] } END { if (last==0) print ENVIRON[\"EF_LINE\"] }'\n\
                 fi\n",
            );
        }
        Presence::Absent => s.push_str(
            "if [ -n \"$EF_RE\" ]; then m='$0 ~ ENVIRON[\"EF_RE\"]'; else m='$0 == ENVIRON[\"EF_LINE\"]'; fi\n\
             if [ -e \"$f\" ] && { if [ -n \"$EF_RE\" ]; then grep -Eq -e \"$EF_RE\" \"$f\"; else grep -Fxq -e \"$EF_LINE\" \"$f\"; fi; }; then\n\
             \x20 ef_do ef_rewrite \"NR==FNR { next } !($m) { print }\"\n\
             fi\n",
        ),
    }
    s
}

fn package_body(p: &PackageParams, facts: &Facts) -> Result<String, StepError> {
    for n in &p.name.0 {
        check_word("package name", n, |c| {
            c.is_ascii_alphanumeric() || "+._:=-~".contains(c)
        })?;
    }
    let names = p
        .name
        .0
        .iter()
        .map(|n| quote(n))
        .collect::<Vec<_>>()
        .join(" ");
    let (query, install, remove, refresh) = match facts.pkg_mgr.as_str() {
        "apt" => (
            "dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null | grep -q 'ok installed'",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends",
            "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q",
            "apt-get update -q",
        ),
        "dnf" => (
            "rpm -q \"$p\" >/dev/null 2>&1",
            "dnf install -y -q",
            "dnf remove -y -q",
            "dnf makecache -q",
        ),
        "yum" => (
            "rpm -q \"$p\" >/dev/null 2>&1",
            "yum install -y -q",
            "yum remove -y -q",
            "yum makecache -q",
        ),
        "zypper" => (
            "rpm -q \"$p\" >/dev/null 2>&1",
            "zypper -n -q install",
            "zypper -n -q remove",
            "zypper -n -q refresh",
        ),
        "apk" => (
            "apk info -e \"$p\" >/dev/null 2>&1",
            "apk add -q",
            "apk del -q",
            "apk update -q",
        ),
        other => {
            return Err(StepError::Invalid(format!(
                "no supported package manager on this host (found `{other}`); supported: apt, dnf, yum, zypper, apk"
            )));
        }
    };
    let apt_never_updated = facts.pkg_mgr == "apt";
    Ok(match p.state {
        Presence::Present => format!(
            "todo=''\nfor p in {names}; do if {query}; then :; else todo=\"$todo $p\"; fi; done\n\
             if [ -n \"$todo\" ]; then\n\
             \x20 if [ {upd} = 1 ] || {{ [ {aptfresh} = 1 ] && [ -z \"$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)\" ]; }}; then ef_do sh -c {refresh}; fi\n\
             \x20 ef_do sh -c {install_q}' \"$@\"' sh $todo\n\
             fi",
            upd = u8::from(p.update_cache),
            aptfresh = u8::from(apt_never_updated),
            refresh = quote(refresh),
            install_q = quote(install),
        ),
        Presence::Absent => format!(
            "todo=''\nfor p in {names}; do if {query}; then todo=\"$todo $p\"; fi; done\n\
             if [ -n \"$todo\" ]; then ef_do sh -c {remove_q}' \"$@\"' sh $todo; fi",
            remove_q = quote(remove),
        ),
    })
}

fn service_body(p: &ServiceParams) -> Result<String, StepError> {
    check_word("service name", &p.name, |c| {
        c.is_ascii_alphanumeric() || "@._:-".contains(c)
    })?;
    let mut s = format!("s={}\n", quote(&p.name));
    // systemctl start|restart, bounded by `timeout` when given.
    match p.timeout {
        Some(secs) => s.push_str(&format!(
            "ef_svc() {{ timeout {secs} systemctl \"$@\"; rc=$?; if [ $rc = 124 ]; then \
             echo \"systemctl $* did not return within {secs} s: the unit has not reported ready \
             (journalctl -u $s)\" >&2; fi; return $rc; }}\n"
        )),
        None => s.push_str("ef_svc() { systemctl \"$@\"; }\n"),
    }
    if p.daemon_reload {
        s.push_str("[ \"$ef_check\" = 1 ] || systemctl daemon-reload\n");
    }
    match p.enabled {
        Some(true) => s.push_str("systemctl is-enabled --quiet \"$s\" 2>/dev/null || ef_do systemctl enable --quiet \"$s\"\n"),
        Some(false) => s.push_str("if systemctl is-enabled --quiet \"$s\" 2>/dev/null; then ef_do systemctl disable --quiet \"$s\"; fi\n"),
        None => {}
    }
    match p.state {
        Some(ServiceState::Started) => {
            s.push_str("systemctl is-active --quiet \"$s\" || ef_do ef_svc start \"$s\"\n")
        }
        Some(ServiceState::Stopped) => s.push_str(
            "if systemctl is-active --quiet \"$s\"; then ef_do systemctl stop \"$s\"; fi\n",
        ),
        Some(ServiceState::Restarted) => s.push_str("ef_do ef_svc restart \"$s\"\n"),
        Some(ServiceState::Reloaded) => s.push_str("ef_do systemctl reload-or-restart \"$s\"\n"),
        None => {}
    }
    Ok(s)
}

pub(super) fn user_body(p: &UserParams) -> Result<String, StepError> {
    check_word("user name", &p.name, |c| {
        c.is_ascii_alphanumeric() || "._-".contains(c)
    })?;
    for g in &p.groups {
        check_word("group name", g, |c| {
            c.is_ascii_alphanumeric() || "._-".contains(c)
        })?;
    }
    let mut s = format!("u={}\n", quote(&p.name));
    for g in &p.groups {
        s.push_str(&format!(
            "getent group {g} >/dev/null || ef_do groupadd {g}\n",
            g = quote(g)
        ));
    }
    let mut add = String::from("useradd -m");
    if p.system {
        add.push_str(" -r");
    }
    if let Some(sh) = &p.shell {
        add.push_str(&format!(" -s {}", quote(sh)));
    }
    if !p.groups.is_empty() {
        add.push_str(&format!(" -G {}", quote(&p.groups.join(","))));
    }
    s.push_str(&format!(
        "if ! id -u \"$u\" >/dev/null 2>&1; then ef_do {add} \"$u\"; fi\n"
    ));
    // `:` keeps the block valid when the user has no shell, groups or key to set.
    s.push_str("if id -u \"$u\" >/dev/null 2>&1; then\n  :\n");
    if let Some(sh) = &p.shell {
        s.push_str(&format!(
            "  [ \"$(getent passwd \"$u\" | cut -d: -f7)\" = {sh} ] || ef_do usermod -s {sh} \"$u\"\n",
            sh = quote(sh)
        ));
    }
    for g in &p.groups {
        s.push_str(&format!(
            "  id -nG \"$u\" | tr ' ' '\\n' | grep -Fxq -e {g} || ef_do usermod -aG {g} \"$u\"\n",
            g = quote(g)
        ));
    }
    if let Some(key) = p.authorized_key.as_ref().filter(|k| !k.trim().is_empty()) {
        s.push_str(&format!(
            "  home=$(getent passwd \"$u\" | cut -d: -f6); k={k}\n\
             \x20 grep -Fxq -e \"$k\" \"$home/.ssh/authorized_keys\" 2>/dev/null || ef_do sh -c 'mkdir -p \"$1/.ssh\" && chmod 700 \"$1/.ssh\" && printf \"%s\\n\" \"$2\" >> \"$1/.ssh/authorized_keys\" && chmod 600 \"$1/.ssh/authorized_keys\" && chown -R \"$3\" \"$1/.ssh\"' sh \"$home\" \"$k\" \"$u\"\n",
            k = quote(key.trim())
        ));
    }
    s.push_str("fi\n");
    Ok(s)
}

fn default_sh() -> String {
    "sh".into()
}
fn yes() -> bool {
    true
}
fn default_sysctl_file() -> String {
    "/etc/sysctl.d/99-edgeforge.conf".into()
}
fn default_modules_file() -> String {
    "/etc/modules-load.d/edgeforge.conf".into()
}
