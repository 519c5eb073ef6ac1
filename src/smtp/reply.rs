//! An SMTP reply as a type: the code and the enhanced status decide, the text is kept for
//! people and for the attempt row, and is never read again to decide anything.

use std::fmt;

/// One complete reply (all its lines), e.g. `451 4.7.1 Rate limit exceeded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code, 200..=599.
    pub code: u16,
    /// The enhanced status code of RFC 3463 (`4.7.1` -> `(4, 7, 1)`), when the first line
    /// carries one whose class matches the code's.
    pub enhanced: Option<(u8, u16, u16)>,
    /// `{code} {lines}`: the lines joined with spaces, an enhanced code repeated at the start
    /// of every line kept only once (as lettre reports replies, so recorded texts stay alike).
    pub text: String,
}

/// What a reply means for the letter it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx/3xx.
    Positive,
    /// 4xx about this letter or recipient: try again later (the try counts).
    Temporary,
    /// 4xx asking the client to slow down: 421, or an enhanced status 4.7.x (RFC 3463's
    /// "security or policy status", which relays use for rate limits). Not the recipient's
    /// fault, so it does not cost a try.
    Throttled,
    /// 5xx: refused for good.
    Permanent,
}

impl Reply {
    /// Parses the lines of one reply (without their CRLF): `250-first`, ..., `250 last`.
    /// None when the lines do not form a reply (wrong code, codes that differ, bad separator).
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Option<Reply> {
        let first = lines.first()?.as_ref();
        let code: u16 = first.get(..3)?.parse().ok()?;
        if !(200..600).contains(&code) {
            return None;
        }
        let mut texts = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let line = line.as_ref();
            if line.get(..3) != first.get(..3) {
                return None;
            }
            let last = i + 1 == lines.len();
            match line.as_bytes().get(3) {
                None if last => texts.push(""),
                Some(b' ') if last => texts.push(&line[4..]),
                Some(b'-') if !last => texts.push(&line[4..]),
                _ => return None,
            }
        }
        let class = (code / 100) as u8;
        let enhanced = texts
            .first()
            .and_then(|t| t.split_whitespace().next())
            .and_then(|word| parse_enhanced(word, class).map(|e| (word, e)));
        let mut text = code.to_string();
        for (i, t) in texts.iter().enumerate() {
            let t = match enhanced {
                // Relays repeat the enhanced code on every line; keep it once.
                Some((word, _)) if i > 0 => t
                    .strip_prefix(word)
                    .filter(|rest| rest.starts_with(' '))
                    .map_or(*t, str::trim_start),
                _ => t,
            };
            if !t.is_empty() || i > 0 {
                text.push(' ');
            }
            text.push_str(t);
        }
        Some(Reply {
            code,
            enhanced: enhanced.map(|(_, e)| e),
            text,
        })
    }

    /// A reply made here, not read from a server (the outbox's "written to ...").
    pub fn local(code: u16, text: impl fmt::Display) -> Reply {
        Reply {
            code,
            enhanced: None,
            text: format!("{code} {text}"),
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn verdict(&self) -> Verdict {
        match self.code {
            200..=399 => Verdict::Positive,
            421 => Verdict::Throttled,
            400..=499 if matches!(self.enhanced, Some((4, 7, _))) => Verdict::Throttled,
            400..=499 => Verdict::Temporary,
            _ => Verdict::Permanent,
        }
    }
}

/// `class.subject.detail` with the reply's class, subject and detail of 1-3 digits.
fn parse_enhanced(word: &str, class: u8) -> Option<(u8, u16, u16)> {
    let mut parts = word.split('.');
    let (Some(c), Some(s), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let number = |p: &str| {
        ((1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u16>().ok())
            .flatten()
    };
    let c = (c.len() == 1)
        .then(|| c.parse::<u8>().ok())
        .flatten()
        .filter(|c| *c == class)?;
    Some((c, number(s)?, number(d)?))
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(lines: &[&str]) -> Reply {
        Reply::parse(lines).expect("a reply")
    }

    #[test]
    fn parses_codes_enhanced_status_and_text() {
        let r = reply(&["451 4.7.1 Rate limit exceeded"]);
        assert_eq!(r.code, 451);
        assert_eq!(r.enhanced, Some((4, 7, 1)));
        assert_eq!(r.text, "451 4.7.1 Rate limit exceeded");
        assert_eq!(reply(&["250 Ok"]).enhanced, None);
        assert_eq!(reply(&["220"]).text, "220");
        // A class that disagrees with the code is not an enhanced status.
        assert_eq!(reply(&["450 5.1.1 odd"]).enhanced, None);
    }

    #[test]
    fn multi_line_replies_keep_the_enhanced_code_once() {
        let r = reply(&["550-5.1.1 The email account", "550 5.1.1 does not exist"]);
        assert_eq!(r.text, "550 5.1.1 The email account does not exist");
        let r = reply(&["220-mx.example.com ESMTP", "220-welcome", "220 ready"]);
        assert_eq!(r.text, "220 mx.example.com ESMTP welcome ready");
        assert_eq!(r.verdict(), Verdict::Positive);
    }

    #[test]
    fn refuses_what_is_not_a_reply() {
        assert!(Reply::parse(&["25 ok"]).is_none());
        assert!(Reply::parse(&["250-a", "251 b"]).is_none());
        assert!(Reply::parse(&["250-a"]).is_none()); // the last line must end the reply
        assert!(Reply::parse(&["250 a", "250 b"]).is_none());
        assert!(Reply::parse(&["hello"]).is_none());
        assert!(Reply::parse::<&str>(&[]).is_none());
    }

    #[test]
    fn verdicts_come_from_codes_never_words() {
        assert_eq!(
            reply(&["421 4.7.0 Too many connections"]).verdict(),
            Verdict::Throttled
        );
        assert_eq!(
            reply(&["421 Service not available"]).verdict(),
            Verdict::Throttled
        );
        assert_eq!(
            reply(&["450 4.7.1 Slow down"]).verdict(),
            Verdict::Throttled
        );
        assert_eq!(
            reply(&["452 4.7.28 daily limit"]).verdict(),
            Verdict::Throttled
        );
        // Words alone decide nothing.
        assert_eq!(reply(&["451 rate limit"]).verdict(), Verdict::Temporary);
        assert_eq!(
            reply(&["451 4.3.0 Try again later"]).verdict(),
            Verdict::Temporary
        );
        assert_eq!(
            reply(&["550 5.7.1 rate limited"]).verdict(),
            Verdict::Permanent
        );
        assert_eq!(reply(&["250 2.0.0 Ok"]).verdict(), Verdict::Positive);
    }
}
