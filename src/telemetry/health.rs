//! The `health_check` extension: 200 while every pipeline runs, 503 while starting or stopping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde::Deserialize;

use super::server::{self, ShutdownRx};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    pub endpoint: String,
    pub path: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "127.0.0.1:13133".to_string(),
            path: "/".to_string(),
        }
    }
}

/// Whether the service is ready; flipped by the service as it starts and stops.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub async fn start(
    config: &HealthCheckConfig,
    readiness: Readiness,
    shutdown: ShutdownRx,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = server::bind(&config.endpoint, "health_check").await?;
    let path = config.path.clone();
    Ok(server::serve(
        listener,
        move |req, _| {
            let ok = readiness.is_ready();
            let found = req.uri().path() == path;
            async move {
                let (status, body) = match (found, ok) {
                    (false, _) => (StatusCode::NOT_FOUND, "not found"),
                    (true, true) => (StatusCode::OK, r#"{"status":"Server available"}"#),
                    (true, false) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"status":"Server not available"}"#,
                    ),
                };
                let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *resp.status_mut() = status;
                resp
            }
        },
        shutdown,
    ))
}
