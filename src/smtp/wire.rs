//! A letter's bytes as they may travel: every line ended by CRLF (RFC 5321 2.3.8 forbids a
//! bare CR or LF in DATA; some receivers read `\r.\r\n` as the end of the letter, which lets
//! a body smuggle a second letter), and for DATA, a "." starting a line doubled (4.5.2).

use memchr::memchr2;

/// Appends `frame` to `out` with every bare CR and bare LF turned into CRLF.
pub fn crlf(frame: &[u8], out: &mut Vec<u8>) {
    each_line(frame, out, |_, _| {});
}

/// Appends `frame` to `out` as DATA carries it: CRLF line ends and dot-stuffing, without the
/// final `.` line.
pub fn data(frame: &[u8], out: &mut Vec<u8>) {
    each_line(frame, out, |line, out| {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
    });
}

/// Copies `frame` line by line (copying whole runs between line ends), calling `at_start`
/// before each line's bytes, and ending every line with CRLF.
fn each_line(frame: &[u8], out: &mut Vec<u8>, at_start: impl Fn(&[u8], &mut Vec<u8>)) {
    out.reserve(frame.len() + 16);
    let mut rest = frame;
    while !rest.is_empty() {
        at_start(rest, out);
        match memchr2(b'\r', b'\n', rest) {
            None => {
                out.extend_from_slice(rest);
                return;
            }
            Some(at) => {
                out.extend_from_slice(&rest[..at]);
                out.extend_from_slice(b"\r\n");
                // CRLF is one line end; a bare CR or a bare LF is one too.
                let end = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
                    at + 2
                } else {
                    at + 1
                };
                rest = &rest[end..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_wire(s: &str) -> String {
        let mut out = Vec::new();
        data(s.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn normalised(s: &str) -> String {
        let mut out = Vec::new();
        crlf(s.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn dots_at_line_starts_are_doubled() {
        assert_eq!(on_wire(".a\r\n.b\r\n..c\r\n"), "..a\r\n..b\r\n...c\r\n");
        assert_eq!(on_wire("a.\r\nb"), "a.\r\nb");
        assert_eq!(on_wire(""), "");
        assert_eq!(on_wire("."), "..");
    }

    #[test]
    fn bare_cr_and_lf_become_crlf() {
        // The smuggling shape: a bare CR before ".\r\n" must not end the letter.
        assert_eq!(on_wire("L1\rL2\r.\r\n"), "L1\r\nL2\r\n..\r\n");
        assert_eq!(
            on_wire("a\nb\n.c\r\r\n.\r\n."),
            "a\r\nb\r\n..c\r\n\r\n..\r\n.."
        );
        assert_eq!(normalised("a\rb\nc\r\nd\n\r"), "a\r\nb\r\nc\r\nd\r\n\r\n");
        assert_eq!(normalised("plain"), "plain");
    }
}
