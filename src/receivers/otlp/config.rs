//! The `otlp` receiver's settings, with the collector's keys and defaults (but listening on
//! 127.0.0.1 unless told otherwise).

use serde::{Deserialize, Deserializer};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceiverConfig {
    pub protocols: Protocols,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protocols {
    /// Present (even empty) means enabled, as in the collector.
    #[serde(deserialize_with = "present")]
    pub grpc: Option<GrpcConfig>,
    #[serde(deserialize_with = "present")]
    pub http: Option<HttpConfig>,
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Keys the collector has that sluice does not implement yet; a config that sets them fails
/// at start-up instead of running without them.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NotYet(serde::de::IgnoredAny);

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    pub endpoint: String,
    pub transport: String,
    pub max_recv_msg_size_mib: u64,
    pub max_concurrent_streams: u32,
    pub read_buffer_size: Option<u64>,
    pub write_buffer_size: Option<u64>,
    pub include_metadata: bool,
    pub keepalive: Option<NotYet>,
    pub tls: Option<NotYet>,
    pub auth: Option<NotYet>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: "127.0.0.1:4317".to_string(),
            transport: "tcp".to_string(),
            max_recv_msg_size_mib: 4,
            max_concurrent_streams: 0,
            read_buffer_size: None,
            write_buffer_size: None,
            include_metadata: false,
            keepalive: None,
            tls: None,
            auth: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub endpoint: String,
    pub max_request_body_size: u64,
    pub traces_url_path: String,
    pub metrics_url_path: String,
    pub logs_url_path: String,
    pub include_metadata: bool,
    pub compression_algorithms: Option<Vec<String>>,
    pub cors: Option<NotYet>,
    pub tls: Option<NotYet>,
    pub auth: Option<NotYet>,
    pub response_headers: Option<NotYet>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: "127.0.0.1:4318".to_string(),
            max_request_body_size: 20 * 1024 * 1024,
            traces_url_path: "/v1/traces".to_string(),
            metrics_url_path: "/v1/metrics".to_string(),
            logs_url_path: "/v1/logs".to_string(),
            include_metadata: false,
            compression_algorithms: None,
            cors: None,
            tls: None,
            auth: None,
            response_headers: None,
        }
    }
}

impl OtlpReceiverConfig {
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.protocols;
        if p.grpc.is_none() && p.http.is_none() {
            return Err("at least one of `protocols.grpc` or `protocols.http` must be set".into());
        }
        if let Some(g) = &p.grpc {
            let unsupported = [
                ("tls", g.tls.is_some()),
                ("auth", g.auth.is_some()),
                ("keepalive", g.keepalive.is_some()),
                ("include_metadata", g.include_metadata),
            ];
            if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
                return Err(format!("protocols.grpc.{key} is not supported yet"));
            }
            if g.transport != "tcp" {
                return Err(format!(
                    "protocols.grpc.transport `{}` is not supported yet (only tcp)",
                    g.transport
                ));
            }
            if g.max_recv_msg_size_mib == 0 {
                return Err(
                    "protocols.grpc.max_recv_msg_size_mib must be greater than zero".into(),
                );
            }
        }
        if let Some(h) = &p.http {
            let unsupported = [
                ("tls", h.tls.is_some()),
                ("auth", h.auth.is_some()),
                ("cors", h.cors.is_some()),
                ("response_headers", h.response_headers.is_some()),
                ("include_metadata", h.include_metadata),
            ];
            if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
                return Err(format!("protocols.http.{key} is not supported yet"));
            }
            let algos = h.compression_algorithms.iter().flatten();
            if let Some(bad) = algos
                .into_iter()
                .find(|a| !["gzip", "zstd", "deflate", ""].contains(&a.as_str()))
            {
                return Err(format!(
                    "protocols.http.compression_algorithms: `{bad}` is not supported yet (gzip, zstd, deflate)"
                ));
            }
        }
        Ok(())
    }
}
