//! The step output protocol: any line parses to plain output, a directive or a clear
//! error, never a panic; and the masker leaves no declared secret in what it stores,
//! also when the output is cut into batches where the runner cuts it.
#![no_main]

use kiln_domain::protocol::{Directive, Masker, PREFIX, may_be_directive, parse_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The whole input as one line.
    match parse_line(data) {
        None => assert!(!data.starts_with(PREFIX)),
        Some(Ok(Directive::Event { data: d, ty })) => {
            assert!(d.is_object(), "event data is an object");
            assert!(!ty.is_empty());
        }
        Some(Ok(Directive::Progress { percent, .. })) => assert!(percent <= 100),
        Some(Ok(_)) => {}
        Some(Err(e)) => assert!(!e.0.is_empty()),
    }
    if data.len() >= PREFIX.len() {
        assert_eq!(may_be_directive(data), data.starts_with(PREFIX));
    }

    // Masking: the first line of the input lists secrets (split at 0xff), the rest is output.
    // Secrets with `*` in them are left out: `***` itself could then spell one.
    let (head, output) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => return,
    };
    let mut masker = Masker::new();
    let secrets: Vec<&[u8]> =
        head.split(|&b| b == 0xff).filter(|s| !s.is_empty() && !s.contains(&b'*')).collect();
    for s in &secrets {
        masker.add(s);
    }
    let masked = masker.mask(output);
    for s in &secrets {
        assert!(!contains(&masked, s), "secret {s:?} left in {masked:?}");
    }
    // Cut where the runner would: keep back a suffix that could start a secret, mask the
    // rest, go on with what was kept. The result is the same as masking in one go (so no
    // secret is left whole across the cut either).
    let mid = output.len() / 2;
    let keep = masker.pending_suffix_len(&output[..mid]);
    let cut = mid - keep;
    let mut joined = masker.mask(&output[..cut]).into_owned();
    joined.extend_from_slice(&masker.mask(&output[cut..]));
    assert_eq!(joined, masked.as_ref(), "masking in two parts cut at {cut} differs from in one go");
});

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
