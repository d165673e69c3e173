//! Log lines the way k3s writes them: logrus's text format on stderr
//! (`time="2025-01-02T15:04:05Z" level=info msg="..."`), so `journalctl -u
//! k3s` of a unit running the stand-in reads like one running k3s, and the
//! suites can grep for k3s's own wording.

use std::io::Write;

/// A logrus level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `level=debug` (printed only with `--debug`).
    Debug,
    /// `level=info`.
    Info,
    /// `level=warning`.
    Warn,
    /// `level=error`.
    Error,
    /// `level=fatal` (the caller exits 1 after it).
    Fatal,
}

static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns debug lines on (`--debug`, `K3S_DEBUG`).
pub fn set_debug(on: bool) {
    DEBUG.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Writes one line at `level`.
pub fn line(level: Level, msg: &str) {
    if level == Level::Debug && !DEBUG.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let name = match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warning",
        Level::Error => "error",
        Level::Fatal => "fatal",
    };
    let time = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    let text = format!("time=\"{time}\" level={name} msg={}\n", quote(msg));
    // One write per line so lines of concurrent tasks never interleave.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `level=info`.
pub fn info(msg: impl AsRef<str>) {
    line(Level::Info, msg.as_ref());
}

/// `level=warning`.
pub fn warn(msg: impl AsRef<str>) {
    line(Level::Warn, msg.as_ref());
}

/// `level=error`.
pub fn error(msg: impl AsRef<str>) {
    line(Level::Error, msg.as_ref());
}

/// `level=debug`.
pub fn debug(msg: impl AsRef<str>) {
    line(Level::Debug, msg.as_ref());
}

/// `level=fatal`; the caller returns exit code 1.
pub fn fatal(msg: impl AsRef<str>) -> i32 {
    line(Level::Fatal, msg.as_ref());
    1
}

/// logrus quotes a value unless it is made of letters, digits and `-._/@^+`.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if plain {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn values_are_quoted_like_logrus() {
        assert_eq!(quote("pong"), "pong");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quote(""), "\"\"");
    }
}
