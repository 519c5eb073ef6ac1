//! Where `bounces import` reads messages from: standard input (one message, as an MTA pipes
//! it), an mbox file (mboxrd: `>From ` lines unquoted), or a Maildir (`new/`, then moved to
//! `cur/` or removed once done).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub struct Message {
    pub raw: Vec<u8>,
    /// The Maildir file it came from (moved or removed once its transaction committed).
    pub file: Option<PathBuf>,
}

pub enum Source {
    Stdin,
    Mbox,
    Maildir(PathBuf),
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::runtime(format!("cannot read {}: {e}", path.display()))
}

/// Every message of the input, or exit 1 naming the path that cannot be read.
pub fn read(path: Option<&str>) -> Result<(Source, Vec<Message>)> {
    let path = match path {
        None | Some("-") => {
            use std::io::Read;
            let mut raw = Vec::new();
            std::io::stdin()
                .read_to_end(&mut raw)
                .map_err(|e| Error::runtime(format!("cannot read standard input: {e}")))?;
            return Ok((Source::Stdin, vec![Message { raw, file: None }]));
        }
        Some(p) => PathBuf::from(p),
    };
    let meta = std::fs::metadata(&path).map_err(|e| unreadable(&path, e))?;
    if meta.is_dir() {
        let new = path.join("new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
            .map_err(|e| unreadable(&new, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut messages = Vec::with_capacity(files.len());
        for f in files {
            let raw = std::fs::read(&f).map_err(|e| unreadable(&f, e))?;
            messages.push(Message { raw, file: Some(f) });
        }
        return Ok((Source::Maildir(path), messages));
    }
    let data = std::fs::read(&path).map_err(|e| unreadable(&path, e))?;
    if data.starts_with(b"From ") {
        Ok((Source::Mbox, split_mbox(&data)))
    } else {
        Ok((
            Source::Mbox,
            vec![Message {
                raw: data,
                file: None,
            }],
        ))
    }
}

/// Splits an mbox: a `From ` line at the start or after a blank line begins a message.
pub fn split_mbox(data: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut prev_blank = true;
    let mut start = 0;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i + 1);
        let line = &data[start..end];
        start = end;
        if prev_blank && line.starts_with(b"From ") {
            if let Some(m) = current.take() {
                out.push(finish(m));
            }
            current = Some(Vec::new());
            prev_blank = false;
            continue;
        }
        prev_blank = line == b"\n" || line == b"\r\n";
        let Some(m) = current.as_mut() else { continue };
        // mboxrd: `>From `, `>>From `... lose one `>`.
        let quoted = line.iter().take_while(|&&b| b == b'>').count();
        if quoted > 0 && line[quoted..].starts_with(b"From ") {
            m.extend_from_slice(&line[1..]);
        } else {
            m.extend_from_slice(line);
        }
    }
    if let Some(m) = current.take() {
        out.push(finish(m));
    }
    out
}

/// The blank line before the next `From ` belongs to the mbox, not to the message.
fn finish(mut raw: Vec<u8>) -> Message {
    if raw.ends_with(b"\r\n\r\n") {
        raw.truncate(raw.len() - 2);
    } else if raw.ends_with(b"\n\n") {
        raw.truncate(raw.len() - 1);
    }
    Message { raw, file: None }
}

/// A Maildir message is done: into `cur/` with the Seen flag, or removed.
pub fn done(maildir: &Path, file: &Path, delete: bool) -> Result<()> {
    if delete {
        return std::fs::remove_file(file)
            .map_err(|e| Error::runtime(format!("cannot remove {}: {e}", file.display())));
    }
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let base = name.split(":2,").next().unwrap_or(&name);
    let target = maildir.join("cur").join(format!("{base}:2,S"));
    std::fs::create_dir_all(maildir.join("cur"))
        .and_then(|()| std::fs::rename(file, &target))
        .map_err(|e| Error::runtime(format!("cannot move {} to cur/: {e}", file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_split_and_unquote() {
        let data = b"From a@b Mon Jan 1 00:00:00 2026\nSubject: one\n\n>From here\nbody\n\nFrom c@d Mon Jan 1 00:00:00 2026\nSubject: two\n\nx\n";
        let m = split_mbox(data);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].raw, b"Subject: one\n\nFrom here\nbody\n");
        assert_eq!(m[1].raw, b"Subject: two\n\nx\n");
    }
}
