//! The git host's side of builds from git: fetching a commit's `.kiln.yml`, posting
//! commit statuses ([`provider`]) and checking a commit out into a workspace
//! ([`checkout`]). The pure parts (webhooks, globs, the build's [`GitInfo`]) are in
//! `kiln_domain::git`.
//!
//! [`GitInfo`]: kiln_domain::git::GitInfo

pub mod checkout;
pub mod provider;
pub mod unpack;

/// reqwest's own message is terse ("error sending request"); the cause chain says why.
pub(crate) fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}
