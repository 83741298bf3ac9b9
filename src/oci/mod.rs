//! Evidence stores behind [`EvidenceStore`]: a registry over the OCI distribution API
//! ([`RegistryStore`]) or OCI image layout directories ([`LayoutStore`]), and [`Stores`], which
//! routes an image to the store for its registry host.
//!
//! - [`manifest`]: OCI manifest / index types and the pure checks against [`Limits`].
//! - [`build`]: pure builders for small images and for cosign `.sig` / `.att` manifests.
//! - [`cosign`]: the cosign tag layout and Sigstore referrers, written once over a small backend.
//! - [`registry`], [`layout`]: the two backends; [`auth`]: registry credentials from the config;
//!   `bounded`: the registry's manifest GET that stops reading at the size limit.

pub mod auth;
mod bounded;
pub mod build;
pub mod cosign;
pub mod layout;
pub mod manifest;
pub mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use layout::LayoutStore;
pub use manifest::Limits;
pub use registry::RegistryStore;

use crate::cache::EvidenceCache;
use crate::config::Config;
use crate::gate::evidence::EvidenceStore;
use crate::image::ImageRef;

/// Why a store could not be set up from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("registries.\"{host}\".auth: cannot use {what} {}: {detail}", path.display())]
    Credentials {
        host: String,
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("registries.\"{host}\": cannot create the HTTP client: {detail}")]
    Client { host: String, detail: String },
}

impl StoreError {
    pub(crate) fn credentials(host: &str, what: &'static str, path: &Path, detail: impl ToString) -> StoreError {
        StoreError::Credentials {
            host: host.to_string(),
            what,
            path: path.to_path_buf(),
            detail: detail.to_string(),
        }
    }
}

/// The evidence store for each registry host. Hosts the config does not name get an anonymous
/// HTTPS [`RegistryStore`], created on first use and kept (its token cache is worth keeping).
pub struct Stores {
    configured: BTreeMap<String, Arc<dyn EvidenceStore>>,
    others: Mutex<BTreeMap<String, Arc<dyn EvidenceStore>>>,
    /// One HTTP client for all unconfigured hosts; oci-client keys credentials and tokens by host.
    anonymous: oci_client::Client,
    limits: Limits,
    /// Fetched and verified evidence, shared by every evaluation through this router (it lives
    /// here because every gate has exactly one `Stores`).
    cache: Arc<EvidenceCache>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("configured", &self.configured.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Stores {
    /// Reads credentials and builds a store per configured registry: a [`LayoutStore`] if it has
    /// `oci_layout`, else a [`RegistryStore`].
    pub fn from_config(config: &Config) -> Result<Stores, StoreError> {
        Self::with_limits(config, Limits::default())
    }

    pub fn with_limits(config: &Config, limits: Limits) -> Result<Stores, StoreError> {
        let mut configured: BTreeMap<String, Arc<dyn EvidenceStore>> = BTreeMap::new();
        for (host, reg) in &config.registries {
            let store: Arc<dyn EvidenceStore> = match &reg.oci_layout {
                Some(dir) => Arc::new(LayoutStore::with_limits(host, dir, limits)),
                None => Arc::new(RegistryStore::with_limits(host, reg, limits)?),
            };
            configured.insert(host.clone(), store);
        }
        Ok(Stores {
            configured,
            others: Mutex::new(BTreeMap::new()),
            anonymous: registry::anonymous_client(&limits)?,
            limits,
            cache: Arc::new(EvidenceCache::default()),
        })
    }

    /// A router over explicit stores (tests, the demo), with anonymous HTTPS for other hosts.
    pub fn from_stores(
        stores: impl IntoIterator<Item = (String, Arc<dyn EvidenceStore>)>,
    ) -> Result<Stores, StoreError> {
        let limits = Limits::default();
        Ok(Stores {
            configured: stores.into_iter().collect(),
            others: Mutex::new(BTreeMap::new()),
            anonymous: registry::anonymous_client(&limits)?,
            limits,
            cache: Arc::new(EvidenceCache::default()),
        })
    }

    /// Replaces the evidence cache (tests and benchmarks size it, or turn fetch caching off).
    pub fn with_cache(mut self, cache: Arc<EvidenceCache>) -> Stores {
        self.cache = cache;
        self
    }

    pub fn cache(&self) -> &Arc<EvidenceCache> {
        &self.cache
    }

    /// The store for the image's registry host ([`ImageRef::registry`]).
    pub fn for_image(&self, image: &ImageRef) -> Arc<dyn EvidenceStore> {
        let host = image.registry();
        if let Some(s) = self.configured.get(host) {
            return s.clone();
        }
        // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
        let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        others
            .entry(host.to_string())
            .or_insert_with(|| {
                Arc::new(RegistryStore::from_parts(
                    host,
                    self.anonymous.clone(),
                    oci_client::secrets::RegistryAuth::Anonymous,
                    self.limits,
                ))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Registry, RegistryAuth};

    #[test]
    fn credential_errors_name_the_registry_and_file() {
        let cfg = Registry {
            auth: RegistryAuth::Bearer {
                token_file: "/nonexistent/token".into(),
            },
            ..Registry::default()
        };
        let err = RegistryStore::new("ghcr.io", &cfg).unwrap_err().to_string();
        assert!(
            err.contains("registries.\"ghcr.io\"") && err.contains("/nonexistent/token"),
            "{err}"
        );
    }

    #[test]
    fn routes_by_host_and_keeps_stores_for_unknown_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let layout: Arc<dyn EvidenceStore> = Arc::new(LayoutStore::new("registry.local", dir.path()));
        let stores = Stores::from_stores([("registry.local".to_string(), layout.clone())]).unwrap();
        let local = ImageRef::parse("registry.local/acme/api:1").unwrap();
        assert!(Arc::ptr_eq(&stores.for_image(&local), &layout));
        let hub = ImageRef::parse("nginx:1").unwrap();
        assert!(Arc::ptr_eq(&stores.for_image(&hub), &stores.for_image(&hub)));
        assert!(!Arc::ptr_eq(&stores.for_image(&hub), &layout));
    }
}
