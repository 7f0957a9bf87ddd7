//! Webhook payload parsing (GitHub and Gitea/Forgejo) on any body and headers: a hook,
//! a skip or a clear error, never a panic; a signature made with the secret verifies,
//! any other does not.
#![no_main]

use kiln_domain::git::Provider;
use kiln_domain::git::hook::{self, Hook};
use libfuzzer_sys::fuzz_target;

const EVENTS: [&str; 5] = ["push", "pull_request", "ping", "issues", ""];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let provider = Provider::ALL[(sel & 1) as usize];
    let event = EVENTS[(sel >> 1) as usize % EVENTS.len()];
    let delivery = if sel & 0x80 == 0 { "d-1" } else { " " };

    let _ = hook::repository_full_name(body);
    match hook::parse(provider, "http://127.0.0.1:1", event, delivery, body) {
        Ok(Hook::Skip(why)) => assert!(!why.is_empty()),
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    let secret = b"fuzz-secret";
    let good = hook::sign(provider, secret, body);
    assert!(hook::verify_signature(provider, secret, body, &good));
    assert!(!hook::verify_signature(provider, b"other-secret", body, &good));
    let text = String::from_utf8_lossy(body);
    if text != good {
        assert!(!hook::verify_signature(provider, secret, body, &text));
    }
});
