//! The git host's side of builds from git: fetching a commit's `.kiln.yml`, posting
//! commit statuses ([`provider`]) and checking a commit out into a workspace
//! ([`checkout`]). The pure parts (webhooks, globs, the build's [`GitInfo`]) are in
//! `kiln_domain::git`.
//!
//! [`GitInfo`]: kiln_domain::git::GitInfo

pub mod checkout;
pub mod provider;
pub mod unpack;
