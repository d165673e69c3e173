//! Each step kind against a local shell in a temp directory: the first run
//! changes, the second reports ok, check mode changes nothing.

use std::path::Path;
use std::sync::atomic::Ordering;

use serde_json::json;

use super::artifact::{ArtifactParams, cached_artifact_in};
use super::*;
use crate::playbook::Playbook;
use crate::testutil::{NoReach, ShellTransport, fake_command};

struct Rig {
    dir: tempfile::TempDir,
    data: DataDir,
    renderer: Renderer,
    facts: Facts,
    transport: ShellTransport,
    reach: NoReach,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["data/templates", "bin", "root"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(
            dir.path().join("data/templates/motd.j2"),
            "welcome to {{ node.name }}\n",
        )
        .unwrap();
        let data = DataDir::new(Some(&dir.path().join("data")));
        let renderer = Renderer::new(&data).unwrap();
        let transport = ShellTransport::with_fake_bin(dir.path().join("bin"));
        Rig {
            dir,
            data,
            renderer,
            facts: Facts {
                pkg_mgr: "apt".into(),
                ..Facts::default()
            },
            transport,
            reach: NoReach::default(),
        }
    }

    fn root(&self) -> String {
        self.dir.path().join("root").display().to_string()
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join("root").join(rel)
    }

    /// Parses `step_yaml` (one step, `{root}` replaced) and runs it.
    async fn run(&self, step_yaml: &str, check: bool) -> Result<StepReport, StepError> {
        let text = format!(
            "name: t\nsteps:\n  - name: s\n    {}\n",
            step_yaml.replace("{root}", &self.root())
        );
        let pb = Playbook::parse("t.yaml", &text).unwrap();
        let ctx = json!({"node": {"name": "edge-1"}, "facts": self.facts});
        let env = StepEnv {
            conn: Conn::Host {
                transport: &self.transport,
                facts: &self.facts,
            },
            reach: &self.reach,
            task_data: &TaskData::None,
            task: "edge-1/os",
            renderer: &self.renderer,
            data: &self.data,
            ctx: &ctx,
            check,
            diff: true,
            recreate: false,
            state_dir: None,
            privileged: false,
            origin: "t.yaml step 's'".into(),
        };
        let prepared = Prepared::new(&*pb.steps[0].kind, &env)?;
        prepared.apply(&env).await
    }

    /// check → changed (nothing changed), run → changed, run again → ok.
    async fn converges(&self, step_yaml: &str) {
        let check = self.run(step_yaml, true).await.unwrap();
        assert!(
            check.changed,
            "check mode should report a change for {step_yaml}"
        );
        let first = self.run(step_yaml, false).await.unwrap();
        assert!(first.changed, "first run should change for {step_yaml}");
        let second = self.run(step_yaml, false).await.unwrap();
        assert!(
            !second.changed,
            "second run should change nothing for {step_yaml}"
        );
    }

    fn trips(&self) -> usize {
        self.transport.round_trips.swap(0, Ordering::SeqCst)
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test]
async fn command_guards_creates_removes_unless() {
    let rig = Rig::new();
    let step =
        "command: { cmd: 'echo ran >> {root}/log; touch {root}/done', creates: '{root}/done' }";
    let check = rig.run(step, true).await.unwrap();
    assert!(check.changed);
    assert!(!rig.path("log").exists(), "check mode ran the command");
    rig.converges(step).await;
    assert_eq!(read(&rig.path("log")), "ran\n");
    rig.trips();
    let r = rig
        .run(
            "command: { cmd: 'false', removes: '{root}/nothing-here' }",
            false,
        )
        .await
        .unwrap();
    assert!(!r.changed);
    let r = rig
        .run(
            "command: { cmd: 'false', unless: 'test -e {root}/done' }",
            false,
        )
        .await
        .unwrap();
    assert!(!r.changed);
    assert_eq!(rig.trips(), 2, "one round trip per command step");
    let out = rig
        .run(
            "command: { cmd: 'echo hello; pwd', chdir: '{root}' }",
            false,
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, format!("hello\n{}", rig.root()));
}

#[tokio::test]
async fn a_failing_command_reports_status_and_stderr() {
    let rig = Rig::new();
    let err = rig
        .run("command: { cmd: 'echo oops >&2; exit 3' }", false)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "exited with status 3: oops");
}

#[tokio::test]
async fn script_inline_runs_from_stdin() {
    let rig = Rig::new();
    rig.converges("script: { inline: \"echo from-script > {root}/s\\n\", creates: '{root}/s' }")
        .await;
    assert_eq!(read(&rig.path("s")), "from-script\n");
}

#[tokio::test]
async fn template_renders_diffs_in_check_and_skips_when_same() {
    let rig = Rig::new();
    let step = "template: { src: motd.j2, dest: '{root}/motd', mode: '0640' }";
    let check = rig.run(step, true).await.unwrap();
    assert!(check.changed);
    let diff = check.diff.unwrap();
    assert!(diff.contains("+welcome to edge-1"), "{diff}");
    assert!(!rig.path("motd").exists());
    rig.converges(step).await;
    assert_eq!(read(&rig.path("motd")), "welcome to edge-1\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(rig.path("motd"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o640);
    std::fs::write(rig.path("motd"), "old\n").unwrap();
    let again = rig.run(step, false).await.unwrap();
    assert!(again.changed);
    assert!(again.diff.unwrap().contains("-old"));
}

#[tokio::test]
async fn copy_places_inline_content_and_local_files() {
    let rig = Rig::new();
    rig.converges("copy: { content: \"a=1\\n\", dest: '{root}/a.conf' }")
        .await;
    assert_eq!(read(&rig.path("a.conf")), "a=1\n");
    std::fs::write(rig.dir.path().join("src.bin"), b"payload").unwrap();
    let src = rig.dir.path().join("src.bin").display().to_string();
    rig.converges(&format!(
        "copy: {{ src: '{src}', dest: '{{root}}/b.bin', mode: 600 }}"
    ))
    .await;
    assert_eq!(read(&rig.path("b.bin")), "payload");
}

#[tokio::test]
async fn file_states() {
    let rig = Rig::new();
    rig.converges("file: { path: '{root}/d/e', state: directory, mode: '0700' }")
        .await;
    assert!(rig.path("d/e").is_dir());
    rig.converges("file: { path: '{root}/t', state: touch, mode: 0600 }")
        .await;
    rig.converges("file: { path: '{root}/l', state: symlink, src: '{root}/t' }")
        .await;
    assert_eq!(std::fs::read_link(rig.path("l")).unwrap(), rig.path("t"));
    rig.converges("file: { path: '{root}/d', state: absent }")
        .await;
    assert!(!rig.path("d").exists());
    rig.trips();
    rig.run(
        "file: { path: '{root}/t', state: file, mode: '0644' }",
        false,
    )
    .await
    .unwrap();
    assert_eq!(rig.trips(), 1);
    let err = rig
        .run("file: { path: '{root}/nope', state: file }", false)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not exist; use state: touch"),
        "{err}"
    );
}

#[tokio::test]
async fn lineinfile_replace_insertafter_and_absent() {
    let rig = Rig::new();
    std::fs::write(rig.path("f"), "# head\nPort 22\nX=1\n").unwrap();
    rig.converges("lineinfile: { path: '{root}/f', regexp: '^Port ', line: 'Port 2222' }")
        .await;
    assert_eq!(read(&rig.path("f")), "# head\nPort 2222\nX=1\n");
    rig.converges("lineinfile: { path: '{root}/f', line: 'after head', insertafter: '^# head' }")
        .await;
    assert_eq!(read(&rig.path("f")), "# head\nafter head\nPort 2222\nX=1\n");
    rig.converges("lineinfile: { path: '{root}/f', line: 'at end' }")
        .await;
    rig.converges("lineinfile: { path: '{root}/f', regexp: '^X=', state: absent }")
        .await;
    assert_eq!(
        read(&rig.path("f")),
        "# head\nafter head\nPort 2222\nat end\n"
    );
    rig.converges("lineinfile: { path: '{root}/g', line: \"it's $HOME \\\\n `x`\" }")
        .await;
    assert_eq!(read(&rig.path("g")), "it's $HOME \\n `x`\n");
}

#[tokio::test]
async fn package_installs_only_what_is_missing_in_one_call() {
    let rig = Rig::new();
    let bin = rig.dir.path().join("bin");
    let db = rig.dir.path().join("installed");
    std::fs::write(&db, "curl\n").unwrap();
    fake_command(
        &bin,
        "dpkg-query",
        &format!(
            "grep -qx \"$3\" {db} && printf 'install ok installed'",
            db = db.display()
        ),
    );
    fake_command(&bin, "ls", "echo lists");
    fake_command(
        &bin,
        "apt-get",
        &format!(
            "echo \"$*\" >> {log}; [ \"$1\" = install ] && shift 4 && for p in \"$@\"; do echo $p >> {db}; done; exit 0",
            log = rig.dir.path().join("apt.log").display(),
            db = db.display()
        ),
    );
    rig.converges("package: { name: [curl, conntrack, iptables] }")
        .await;
    let log = read(&rig.dir.path().join("apt.log"));
    assert_eq!(
        log,
        "install -y -q --no-install-recommends conntrack iptables\n"
    );
    assert_eq!(read(&db), "curl\nconntrack\niptables\n");
}

#[tokio::test]
async fn package_without_a_package_manager_is_an_error() {
    let mut rig = Rig::new();
    rig.facts.pkg_mgr = String::new();
    let err = rig.run("package: { name: curl }", false).await.unwrap_err();
    assert!(
        err.to_string().contains("no supported package manager"),
        "{err}"
    );
}

#[tokio::test]
async fn service_enable_and_start() {
    let rig = Rig::new();
    let st = rig.dir.path().join("svc");
    std::fs::create_dir_all(&st).unwrap();
    // A stand-in systemctl keeping enabled/active flags as files.
    fake_command(
        &rig.dir.path().join("bin"),
        "systemctl",
        &format!(
            "d={st}; case \"$1\" in is-enabled) test -e $d/$3.enabled;; is-active) test -e $d/$3.active;; \
             enable) touch $d/$3.enabled;; start) touch $d/$2.active;; restart) echo r >> $d/$2.restarts;; *) exit 1;; esac",
            st = st.display()
        ),
    );
    rig.converges("service: { name: chrony, enabled: true, state: started }")
        .await;
    assert!(st.join("chrony.enabled").exists() && st.join("chrony.active").exists());
    let r = rig
        .run("service: { name: chrony, state: restarted }", false)
        .await
        .unwrap();
    assert!(r.changed, "a restart is always a change");
}

#[tokio::test]
async fn sysctl_applies_and_persists() {
    let rig = Rig::new();
    let st = rig.dir.path().join("sysctl-state");
    fake_command(
        &rig.dir.path().join("bin"),
        "sysctl",
        &format!(
            "if [ \"$1\" = -n ]; then cat {st} 2>/dev/null; else echo \"${{3#*=}}\" > {st}; fi",
            st = st.display()
        ),
    );
    rig.converges("sysctl: { name: net.ipv4.ip_forward, value: 1, file: '{root}/sysctl.d/99-edgeforge.conf' }").await;
    assert_eq!(read(&st), "1\n");
    assert_eq!(
        read(&rig.path("sysctl.d/99-edgeforge.conf")),
        "net.ipv4.ip_forward = 1\n"
    );
    rig.converges("sysctl: { name: net.ipv4.ip_forward, value: 0, file: '{root}/sysctl.d/99-edgeforge.conf' }").await;
    assert_eq!(
        read(&rig.path("sysctl.d/99-edgeforge.conf")),
        "net.ipv4.ip_forward = 0\n"
    );
}

#[tokio::test]
async fn kernel_module_loads_and_persists() {
    let rig = Rig::new();
    let log = rig.dir.path().join("modprobe.log");
    fake_command(
        &rig.dir.path().join("bin"),
        "modprobe",
        &format!("echo \"$1\" >> {}", log.display()),
    );
    let step =
        "kernel_module: { name: ef_no_such_mod, file: '{root}/modules-load.d/edgeforge.conf' }";
    let first = rig.run(step, false).await.unwrap();
    assert!(first.changed);
    assert_eq!(read(&log), "ef_no_such_mod\n");
    assert_eq!(
        read(&rig.path("modules-load.d/edgeforge.conf")),
        "ef_no_such_mod\n"
    );
}

#[tokio::test]
async fn wait_for_a_path_and_a_command() {
    let rig = Rig::new();
    let p = rig.path("ready");
    let p2 = p.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1200));
        std::fs::write(p2, "").unwrap();
    });
    let r = rig
        .run("wait_for: { path: '{root}/ready', timeout: 20 }", false)
        .await
        .unwrap();
    writer.join().unwrap();
    assert!(!r.changed);
    assert!(p.exists());
    let err = rig
        .run("wait_for: { command: 'false', timeout: 1 }", false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("gave up after 1 s"), "{err}");
}

#[tokio::test]
async fn wait_for_a_port() {
    let rig = Rig::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = rig
        .run(&format!("wait_for: {{ port: {port}, timeout: 5 }}"), false)
        .await
        .unwrap();
    assert!(!r.changed);
}

#[tokio::test]
async fn parameters_are_rendered_and_bad_values_refused() {
    let rig = Rig::new();
    rig.converges("file: { path: '{root}/{{ node.name }}', state: directory }")
        .await;
    assert!(rig.path("edge-1").is_dir());
    let err = rig
        .run("file: { path: '{root}/{{ node.nope }}' }", false)
        .await
        .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("variable `node.nope`"), "{chain}");
    let err = rig
        .run("service: { name: '-x', state: started }", false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
}

#[tokio::test]
async fn a_command_never_shows_its_text_in_a_process_list() {
    let rig = Rig::new();
    let marker = "EF-SECRET-MARKER-7f3a";
    let step = format!("command: {{ cmd: 'sleep 1; : {marker}' }}");
    let run = rig.run(&step, false);
    let done = std::sync::atomic::AtomicBool::new(false);
    let scan = async {
        let mut seen = Vec::new();
        while !done.load(Ordering::SeqCst) {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
                    && String::from_utf8_lossy(&cmdline).contains(marker)
                {
                    seen.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        seen
    };
    let run = async {
        let r = run.await;
        done.store(true, Ordering::SeqCst);
        r
    };
    let (report, seen) = tokio::join!(run, scan);
    assert!(report.unwrap().changed);
    assert!(seen.is_empty(), "visible in: {seen:?}");
}

#[tokio::test]
async fn user_with_groups_shell_and_key() {
    let rig = Rig::new();
    let bin = rig.dir.path().join("bin");
    let db = rig.dir.path().join("accounts");
    for d in ["users", "groups", "home"] {
        std::fs::create_dir_all(db.join(d)).unwrap();
    }
    let db = db.display();
    // Stand-ins for the account tools, keeping users and groups as files.
    fake_command(
        &bin,
        "id",
        &format!(
            "case \"$1\" in -u) test -e {db}/users/$2;; -nG) cat {db}/users/$2.groups 2>/dev/null | tr '\\n' ' ';; esac"
        ),
    );
    fake_command(
        &bin,
        "getent",
        &format!(
            "case \"$1\" in passwd) test -e {db}/users/$2 && echo \"$2:x:1000:1000::{db}/home/$2:$(cat {db}/users/$2.shell)\";; \
         group) test -e {db}/groups/$2;; esac"
        ),
    );
    fake_command(&bin, "groupadd", &format!("touch {db}/groups/$1"));
    fake_command(
        &bin,
        "useradd",
        &format!(
            "sh=/bin/sh; g=''; while [ $# -gt 1 ]; do case \"$1\" in -s) sh=$2; shift;; -G) g=$2; shift;; esac; shift; done; \
         touch {db}/users/$1; echo $sh > {db}/users/$1.shell; echo $g | tr ',' '\\n' | grep . > {db}/users/$1.groups; \
         mkdir -p {db}/home/$1; echo \"useradd $1\" >> {db}/log"
        ),
    );
    fake_command(
        &bin,
        "usermod",
        &format!(
            "case \"$1\" in -s) echo $2 > {db}/users/$3.shell;; -aG) echo $2 >> {db}/users/$3.groups;; esac; echo \"usermod $*\" >> {db}/log"
        ),
    );
    fake_command(&bin, "chown", "true");
    let step = "user: { name: ops, groups: [adm, edge], shell: /bin/bash, authorized_key: 'ssh-ed25519 AAAAC3 ops@lab' }";
    rig.converges(step).await;
    assert_eq!(read(Path::new(&format!("{db}/log"))), "useradd ops\n");
    assert_eq!(
        read(Path::new(&format!("{db}/home/ops/.ssh/authorized_keys"))),
        "ssh-ed25519 AAAAC3 ops@lab\n"
    );
    // A changed shell and a new group are applied to the existing account.
    rig.converges("user: { name: ops, groups: [adm, edge, video], shell: /bin/sh }")
        .await;
    assert_eq!(
        read(Path::new(&format!("{db}/users/ops.shell"))),
        "/bin/sh\n"
    );
    assert_eq!(
        read(Path::new(&format!("{db}/users/ops.groups"))),
        "adm\nedge\nvideo\n"
    );
}

#[tokio::test]
async fn artifact_places_the_cached_file_once() {
    use crate::artifacts::{Arch, ArtifactRef, cache::ArtifactCache};
    let rig = Rig::new();
    let cache_dir = rig.dir.path().join("cache");
    let cache = ArtifactCache::open(&cache_dir).unwrap();
    let src = rig.dir.path().join("k3s-standin");
    std::fs::write(&src, b"#!/bin/sh\necho stand-in k3s\n").unwrap();
    let wanted = ArtifactRef::new("k3s", "v1.34.2+k3s1", Arch::Amd64);
    cache.insert_file(&wanted, "k3s", &src).unwrap();
    let params = ArtifactParams {
        name: "k3s".into(),
        version: "v1.34.2+k3s1".into(),
        arch: None,
        dest: format!("{}/k3s", rig.root()),
        mode: Some(Mode(0o755)),
        owner: None,
    };
    let facts = Facts {
        arch: "x86_64".into(),
        ..Facts::default()
    };
    let ctx = json!({});
    let env = StepEnv {
        conn: Conn::Host {
            transport: &rig.transport,
            facts: &facts,
        },
        reach: &rig.reach,
        task_data: &TaskData::None,
        task: "edge-1/k3s",
        renderer: &rig.renderer,
        data: &rig.data,
        ctx: &ctx,
        check: false,
        diff: false,
        recreate: false,
        state_dir: None,
        privileged: false,
        origin: "t.yaml step 'k3s binary'".into(),
    };
    let prepared = Prepared {
        content: Some(cached_artifact_in(&cache_dir, &params, &facts).unwrap()),
        kind: Arc::new(Typed(params.clone())),
    };
    assert!(prepared.apply(&env).await.unwrap().changed);
    assert_eq!(read(&rig.path("k3s")), "#!/bin/sh\necho stand-in k3s\n");
    // Placed before and untouched since: one `stat`, no put (which would hash it).
    rig.trips();
    let again = prepared.apply(&env).await.unwrap();
    assert!(!again.changed);
    assert!(
        again.stdout.contains("as placed before"),
        "{}",
        again.stdout
    );
    assert_eq!(rig.trips(), 1, "only the stat");
    // Touched (its times move): checked again through a put (sha256 compared), kept.
    std::process::Command::new("touch")
        .arg(rig.path("k3s"))
        .status()
        .unwrap();
    let touched = prepared.apply(&env).await.unwrap();
    assert!(!touched.changed);
    assert_eq!(
        rig.trips(),
        3,
        "stat, put (hash compared, nothing sent), stat to remember"
    );
    // Replaced behind edgeforge's back: put back.
    std::fs::write(rig.path("k3s"), "tampered").unwrap();
    assert!(prepared.apply(&env).await.unwrap().changed);
    assert_eq!(read(&rig.path("k3s")), "#!/bin/sh\necho stand-in k3s\n");

    // Not in the cache: the error names the artifact and how to fetch it.
    let missing = ArtifactParams {
        version: "v9.9.9+k3s1".into(),
        ..params
    };
    let err = cached_artifact_in(&cache_dir, &missing, &facts)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("v9.9.9+k3s1") && err.contains("images pull"),
        "{err}"
    );
}

#[test]
fn a_user_with_nothing_but_a_name_is_valid_shell() {
    use super::system::{UserParams, user_body};
    let p = UserParams {
        name: "svc".into(),
        groups: Vec::new(),
        shell: None,
        system: false,
        authorized_key: None,
    };
    let body = user_body(&p).unwrap();
    let out = std::process::Command::new("sh")
        .args(["-n", "-c", &body])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{body}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
