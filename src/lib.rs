//! tollgate: a GitOps promotion gate.
//!
//! It watches environment repositories, notices image bumps in an upstream environment, fetches each
//! candidate's signed evidence from its OCI registry, verifies it, evaluates the promotion policy and
//! writes the promotion commit into the next environment, or blocks it and records why in a git note.
//!
//! Module map, in the order of the flow (SPEC §1):
//! - [`config`]: YAML → validated [`config::Config`], before anything runs.
//! - [`gate`]: the stages: `detect` → `evidence` → `verify` → `policy` → `decide` → `record`.
//! - [`manifest`]: finding and rewriting image references in Kustomize, raw and Helm YAML, byte-exactly.
//! - [`oci`]: evidence stores: a registry over the distribution API, and an OCI image layout directory.
//! - [`git`]: local mirrors, commits, notes, compare-and-swap pushes.
//! - [`dsse`]: DSSE envelopes and in-toto statements.
//! - [`daemon`]: the long-running loop and `check`, both over [`pipeline`].
//! - [`server`]: `/metrics`, `/healthz`, `/readyz`, `/hooks/git`.
//! - [`watch`]: file watching of local remotes, to wake a repository's task on a push.
//! - [`context`]: what a policy reads besides evidence (waivers, upstream promotions), from git.
//! - [`attest`], [`explain`], [`replay`], [`demo`]: the other commands.
//! - [`reason`], [`image`], [`keys`]: shared vocabulary.
#![forbid(unsafe_code)]
// Errors here carry diagnostics (paths, refs, messages) and travel only on cold paths; boxing
// every one to shave bytes off `Result` would cost clarity for no measurable gain.
#![allow(clippy::result_large_err)]

pub mod attest;
pub mod cache;
pub mod config;
pub mod context;
pub mod daemon;
pub mod demo;
pub mod dsse;
pub mod explain;
pub mod gate;
pub mod git;
pub mod image;
pub mod keys;
pub mod manifest;
pub mod oci;
pub mod pipeline;
pub mod reason;
pub mod replay;
pub mod server;
pub mod sigstore;
pub mod telemetry;
pub mod watch;
