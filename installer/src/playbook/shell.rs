//! The shell side of step kinds: quoting and the frame every step script
//! runs in.
//!
//! A step is one POSIX `sh` script that both checks and changes: it calls
//! `ef_do CMD...` for each change, which marks the step changed and, in check
//! mode, does not run CMD. The script's last line of output is a status token
//! that [`parse_status`] reads, so one round trip tells the whole story.

/// The token a step script prints last: `__EF_STATUS__ ok|changed`.
pub const STATUS_TOKEN: &str = "__EF_STATUS__";

pub use crate::sh::quote;

/// Wraps a step body in the frame: `ef_do`, check mode, the final status token.
pub fn frame(body: &str, check: bool) -> String {
    format!(
        "ef_check={check}\nef_changed=0\n\
         ef_do() {{ ef_changed=1; if [ \"$ef_check\" = 1 ]; then return 0; fi; \"$@\" || exit $?; }}\n\
         {body}\n\
         if [ \"$ef_changed\" = 1 ]; then echo {STATUS_TOKEN} changed; else echo {STATUS_TOKEN} ok; fi\n",
        check = u8::from(check),
    )
}

/// Whether a framed script reported a change, and its output without the token.
/// `None` when the token is missing (the script died before its end).
pub fn parse_status(stdout: &[u8]) -> Option<(bool, String)> {
    let text = String::from_utf8_lossy(stdout);
    let trimmed = text.trim_end_matches('\n');
    let (rest, last) = match trimmed.rfind('\n') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    let status = last.strip_prefix(STATUS_TOKEN)?.trim();
    let changed = match status {
        "changed" => true,
        "ok" => false,
        _ => return None,
    };
    Some((changed, rest.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    }

    #[test]
    fn quoted_words_survive_the_shell() {
        for s in [
            "plain",
            "",
            "a b",
            "it's",
            "$(rm -rf /)",
            "`x`",
            "a\nb",
            "\\",
            "\"q\"",
            "*",
        ] {
            let out = sh(&format!("printf %s {}", quote(s)));
            assert_eq!(String::from_utf8_lossy(&out.stdout), s, "for {s:?}");
        }
    }

    #[test]
    fn frame_reports_ok_changed_and_respects_check_mode() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        let body = format!(
            "[ -e {p} ] || ef_do touch {p}",
            p = quote(f.to_str().unwrap())
        );
        let check = sh(&frame(&body, true));
        assert_eq!(parse_status(&check.stdout), Some((true, String::new())));
        assert!(!f.exists(), "check mode must not change anything");
        let first = sh(&frame(&body, false));
        assert_eq!(parse_status(&first.stdout), Some((true, String::new())));
        assert!(f.exists());
        let second = sh(&frame(&body, false));
        assert_eq!(parse_status(&second.stdout), Some((false, String::new())));
    }

    #[test]
    fn a_failing_change_exits_with_its_status_and_no_token() {
        let out = sh(&frame("echo before; ef_do sh -c 'exit 7'", false));
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(parse_status(&out.stdout), None);
    }

    #[test]
    fn output_before_the_token_is_kept() {
        let out = sh(&frame("echo one; echo two", false));
        assert_eq!(
            parse_status(&out.stdout),
            Some((false, "one\ntwo".to_string()))
        );
    }
}
