//! Unsubscribe links: `{mailing}.{client}.{mac}` signed with an installation secret, so a
//! link works for as long as the recipient keeps the letter and nothing per letter is stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// 128 bits of the MAC are plenty for a link that only unsubscribes.
const MAC_BYTES: usize = 16;

fn mac(secret: &[u8], mailing_id: i64, client_id: i64) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(b"unsubscribe:");
    m.update(&mailing_id.to_be_bytes());
    m.update(&client_id.to_be_bytes());
    m
}

pub fn token(secret: &[u8], mailing_id: i64, client_id: i64) -> String {
    let tag = mac(secret, mailing_id, client_id).finalize().into_bytes();
    format!(
        "{mailing_id}.{client_id}.{}",
        URL_SAFE_NO_PAD.encode(&tag[..MAC_BYTES])
    )
}

/// The (mailing, client) a token stands for, if its signature is right (checked in constant time).
pub fn verify(secret: &[u8], token: &str) -> Option<(i64, i64)> {
    if token.len() > 80 {
        return None;
    }
    let mut parts = token.splitn(3, '.');
    let mailing_id: i64 = parts.next()?.parse().ok()?;
    let client_id: i64 = parts.next()?.parse().ok()?;
    let tag = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    if tag.len() != MAC_BYTES || mailing_id <= 0 || client_id <= 0 {
        return None;
    }
    mac(secret, mailing_id, client_id)
        .verify_truncated_left(&tag)
        .ok()
        .map(|_| (mailing_id, client_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let t = token(b"k", 7, 42);
        assert_eq!(verify(b"k", &t), Some((7, 42)));
        assert_eq!(verify(b"other", &t), None);
        let forged = t.replacen("7.", "8.", 1);
        assert_eq!(verify(b"k", &forged), None);
        for bad in [
            "",
            "7",
            "7.42",
            "7.42.",
            "x.y.z",
            "../../etc",
            "-1.2.AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(verify(b"k", bad), None, "{bad}");
        }
    }
}
