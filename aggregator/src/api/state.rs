//! What every handler shares: [`AppState`], the access rules, and running store calls off the
//! async threads. Below [`super`] (the router) and its handler modules, which all import it.

use std::sync::Arc;

use fumegrid_common::clock::Clock;

use super::error::ApiError;
use crate::cases::Catalogue;
use crate::ingest::stats::Stats;
use crate::store::{Reader, StoreError};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub reader: Arc<dyn Reader>,
    pub stats: Arc<Stats>,
    /// The case catalogue in force.
    pub catalogue: Arc<Catalogue>,
    /// Who may call: tokens, and whether a request without one reads as a viewer.
    pub auth: Arc<Auth>,
    /// Case changes (transitions, reports); none: the write endpoints answer 503.
    pub casework: Option<Arc<crate::casework::Casework>>,
    /// Webhook delivery counters.
    pub notify: Arc<crate::notify::NotifyStats>,
    /// What "now" is for queries that default to a window before it (the daemon's one clock).
    pub clock: Clock,
    /// Pictures (blobs, uploads, snapshot requests); none: the evidence endpoints answer 503.
    pub evidence: Option<Arc<crate::evidence::Evidence>>,
    /// Drone positions and the sites with a position (the map); none: the map and track
    /// endpoints answer 503.
    pub drones: Option<Arc<DroneMap>>,
    /// Gateway id → site name and grid cell (`[[gateways]] site`): what a CSV export's `site`
    /// names.
    pub sites: Arc<std::collections::HashMap<String, crate::cases::SiteInfo>>,
}

/// The API's access rules.
#[derive(Debug, Default)]
pub struct Auth {
    pub tokens: crate::auth::Tokens,
    pub anonymous_viewer: bool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Runs a blocking store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || fumegrid_common::panic::contained(f))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// What the map and track endpoints read: the drone store and the places (sites and devices
/// with a position).
pub struct DroneMap {
    pub reader: Arc<dyn crate::store::drone::DroneReader>,
    pub sites: Vec<crate::cases::aerial::Place>,
    /// Registered DJI docks and what was last heard of them; none without `[dji]`.
    pub docks: Option<Arc<crate::dji::Docks>>,
}

impl std::fmt::Debug for DroneMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DroneMap")
            .field("sites", &self.sites.len())
            .finish_non_exhaustive()
    }
}
