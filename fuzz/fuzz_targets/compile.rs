//! The pipeline compiler on any bytes: it returns a plan or errors, never panics; every
//! error has a 1-based position, and a plan it accepts compiles again from its own YAML
//! source unchanged (the compiler is deterministic).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match kiln_domain::compile::compile(data) {
        Ok(plan) => {
            let again = kiln_domain::compile::compile(data).map_err(|e| format!("{e:?}"));
            assert_eq!(again.as_ref().ok(), Some(&plan), "the same source compiled twice differs");
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a failed compile names at least one error");
            for e in &errors {
                assert!(e.line >= 1 && e.column >= 1, "positions are 1-based: {e}");
                assert!(!e.message.is_empty(), "an error says what is wrong");
            }
        }
    }
});
