//! POSIX shell quoting: the one place a value becomes a shell word.
//!
//! A leaf module: the transport quotes paths with it, step kinds quote
//! parameters with it, and templates reach it through the renderer's `quote`
//! filter, so an inventory value lands in a command as exactly one inert word.

/// Quotes `s` for POSIX sh as one word: plain words stay as they are, anything
/// else goes in single quotes with `'` written as `'\''`.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn every_byte_survives_the_shell_as_one_word() {
        for s in [
            "plain",
            "",
            "two words",
            "it's",
            "$(touch /tmp/ef-never)",
            "`id`",
            "a\nb",
            "\"dq\" 'sq' {{ x }} ; | & > <",
            "-n",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s, "{}", quote(s));
        }
        assert!(!std::path::Path::new("/tmp/ef-never").exists());
    }
}
