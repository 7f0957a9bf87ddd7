//! The HTTP API's CloudEvent parser (`POST /v1/builds/{id}/events`) on any body: a
//! 400 with a message or an event bound to the build it was sent to, never a panic.
#![no_main]

use kiln_api::auth::Caller;
use kiln_api::events::validate;
use kiln_domain::BuildId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let build = BuildId::new("b-fuzz");
    // The first byte picks the caller: a runner may send Kiln's reserved types, an admin not.
    let (caller, body) = match data.split_first() {
        Some((b, rest)) if b % 2 == 0 => (Caller::Admin, rest),
        Some((_, rest)) => (Caller::Runner(build.clone()), rest),
        None => (Caller::Admin, data),
    };
    match validate(body, &build, &caller) {
        Ok(event) => {
            assert_eq!(event.kilnbuild.as_ref(), Some(&build));
            assert!(event.data.is_object(), "accepted data is an object");
            assert!(body.len() <= kiln_api::events::MAX_EVENT_BYTES);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
