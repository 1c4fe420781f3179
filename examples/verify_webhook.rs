//! Verifying a cchc-pipeline webhook in Rust (docs/WEBHOOKS.md): the
//! `verify` function below is what a receiver needs (crates `hmac`, `sha2`,
//! `hex`, `subtle`); `cargo test --example verify_webhook` checks it against
//! the pipeline's own signing.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far the signing time may be from the receiver's clock.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Whether a request is genuine and fresh: `signature` (`X-Cchc-Signature`)
/// is `sha256=` and the hex HMAC-SHA256, with `secret`, of
/// `<timestamp>.<body>`, and `timestamp` (`X-Cchc-Timestamp`, seconds since
/// the epoch) is within [`TOLERANCE_SECONDS`] of `now`.
pub fn verify(secret: &str, timestamp: &str, signature: &str, body: &[u8], now: i64) -> bool {
    let Ok(signed_at) = timestamp.parse::<i64>() else {
        return false;
    };
    if (now - signed_at).abs() > TOLERANCE_SECONDS {
        return false;
    }
    let Some(hex_mac) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // Constant time, whatever the guess.
    mac.verify_slice(&given).is_ok()
}

fn main() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [secret, timestamp, signature, body] = args.as_slice() else {
        eprintln!("usage: verify_webhook SECRET TIMESTAMP SIGNATURE BODY");
        std::process::exit(2);
    };
    let genuine = verify(secret, timestamp, signature, body.as_bytes(), now);
    println!("{}", if genuine { "genuine" } else { "refused" });
    std::process::exit(if genuine { 0 } else { 1 });
}

#[cfg(test)]
mod tests {
    use super::*;
    use cchc_pipeline::alerts::signature;

    const BODY: &[u8] = br#"{"alert_id":"31471.on_time_rate.ytd.1"}"#;

    #[test]
    fn what_the_pipeline_signs_is_genuine_and_anything_else_refused() {
        let secret = "a shared secret of the chat bot";
        let at = 1_764_590_400;
        let signed = signature(secret, at, BODY);
        assert!(verify(secret, &at.to_string(), &signed, BODY, at + 5));
        assert!(!verify(
            "another secret",
            &at.to_string(),
            &signed,
            BODY,
            at
        ));
        assert!(
            !verify(secret, &at.to_string(), &signed, b"{}", at),
            "body changed"
        );
        assert!(
            !verify(secret, &(at + 1).to_string(), &signed, BODY, at),
            "time changed"
        );
        assert!(
            !verify(secret, &at.to_string(), &signed, BODY, at + 301),
            "replayed later"
        );
        assert!(!verify(secret, "soon", &signed, BODY, at));
    }
}
