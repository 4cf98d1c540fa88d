//! OTLP/HTTP: protobuf and JSON bodies, gzip and zstd, a size limit that also bounds what
//! decompression may produce, and answers in the request's own encoding.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::config::HttpConfig;
use super::{Intake, Rejection};
use crate::otlp::{Signal, json, rpc};
use crate::pipeline::consumer::Refusal;
use crate::telemetry::server::{self, ShutdownRx};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Proto,
    Json,
}

struct Routes {
    paths: [(String, Signal); 3],
    limit: usize,
}

pub(super) fn serve(
    listener: TcpListener,
    config: &HttpConfig,
    intake: Arc<Intake>,
    shutdown: ShutdownRx,
) -> JoinHandle<()> {
    let routes = Arc::new(Routes {
        paths: [
            (config.traces_url_path.clone(), Signal::Traces),
            (config.metrics_url_path.clone(), Signal::Metrics),
            (config.logs_url_path.clone(), Signal::Logs),
        ],
        limit: usize::try_from(config.max_request_body_size).unwrap_or(usize::MAX),
    });
    server::serve(
        listener,
        move |req, _| {
            let intake = intake.clone();
            let routes = routes.clone();
            async move { handle(req, &routes, &intake).await }
        },
        shutdown,
    )
}

async fn handle(req: Request<Incoming>, routes: &Routes, intake: &Intake) -> Response<Full<Bytes>> {
    let Some(signal) = routes
        .paths
        .iter()
        .find(|(p, _)| p == req.uri().path())
        .map(|(_, s)| *s)
    else {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    };
    if req.method() != Method::POST {
        let mut resp = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 method not allowed, supported: [POST]",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Proto,
        "application/json" => Encoding::Json,
        other => {
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!(
                    "415 unsupported media type `{other}`, supported: [application/json, application/x-protobuf]"
                ),
            );
        }
    };
    let content_encoding = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let body = match Limited::new(req.into_body(), routes.limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                error(
                    encoding,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "request body exceeds max_request_body_size ({} bytes)",
                        routes.limit
                    ),
                )
            } else {
                error(
                    encoding,
                    StatusCode::BAD_REQUEST,
                    &format!("failed to read request body: {e}"),
                )
            };
        }
    };
    let body = match decompress(&content_encoding, body, routes.limit) {
        Ok(b) => b,
        Err((status, message)) => return error(encoding, status, &message),
    };
    let payload = match encoding {
        Encoding::Proto => body,
        Encoding::Json => match json::json_to_proto(signal, &body) {
            Ok(p) => Bytes::from(p),
            Err(message) => return error(encoding, StatusCode::BAD_REQUEST, &message),
        },
    };
    match intake.accept(signal, payload).await {
        Ok(()) => success(encoding, signal),
        Err(Rejection::Invalid(message)) => error(encoding, StatusCode::BAD_REQUEST, &message),
        Err(Rejection::NoPipeline(signal)) => error(
            encoding,
            StatusCode::NOT_FOUND,
            &format!("this receiver is not in any {signal} pipeline"),
        ),
        Err(Rejection::Refused(refusal)) => {
            let (status, retry_after) = match refusal {
                Refusal::Overloaded => (StatusCode::TOO_MANY_REQUESTS, "1"),
                Refusal::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "5"),
            };
            let mut resp = error(encoding, status, &refusal.to_string());
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
            resp
        }
    }
}

/// Decompresses a body without letting the output grow past `limit` (a zip bomb is refused
/// after reading at most `limit + 1` bytes of output).
fn decompress(encoding: &str, body: Bytes, limit: usize) -> Result<Bytes, (StatusCode, String)> {
    let reader: Box<dyn Read> = match encoding {
        "" | "identity" | "none" => return Ok(body),
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(std::io::Cursor::new(
            body,
        ))),
        "zstd" => match zstd::stream::read::Decoder::new(std::io::Cursor::new(body)) {
            Ok(d) => Box::new(d),
            Err(e) => return Err((StatusCode::BAD_REQUEST, format!("invalid zstd body: {e}"))),
        },
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(std::io::Cursor::new(body))),
        other => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("unsupported Content-Encoding `{other}`, supported: gzip, zstd, deflate"),
            ));
        }
    };
    let mut out = Vec::new();
    let read = reader.take(limit as u64 + 1).read_to_end(&mut out);
    match read {
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            format!("invalid {encoding} body: {e}"),
        )),
        Ok(n) if n > limit => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed body exceeds max_request_body_size ({limit} bytes)"),
        )),
        Ok(_) => Ok(out.into()),
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(text.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn success(encoding: Encoding, signal: Signal) -> Response<Full<Bytes>> {
    // An empty Export*ServiceResponse: no bytes in protobuf, `{}` in JSON.
    let (body, content_type) = match encoding {
        Encoding::Proto => (Bytes::new(), "application/x-protobuf"),
        Encoding::Json => (
            Bytes::from(json::response_proto_to_json(signal, &[])),
            "application/json",
        ),
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// An error body as OTLP/HTTP specifies: a `google.rpc.Status` in the request's encoding.
fn error(encoding: Encoding, status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let code = match status {
        StatusCode::TOO_MANY_REQUESTS => 8,    // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14, // UNAVAILABLE
        StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::NOT_FOUND => 12, // UNIMPLEMENTED
        _ => 3,                      // INVALID_ARGUMENT
    };
    let (body, content_type) = match encoding {
        Encoding::Proto => (
            Bytes::from(
                rpc::RpcStatus {
                    code,
                    message: message.to_string(),
                    details: Vec::new(),
                }
                .encode_to_vec(),
            ),
            "application/x-protobuf",
        ),
        Encoding::Json => (
            Bytes::from(serde_json::json!({ "code": code, "message": message }).to_string()),
            "application/json",
        ),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_bomb_is_refused_within_the_limit() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = Bytes::from(enc.finish().unwrap());
        let err = decompress("gzip", bomb, 1 << 20).unwrap_err();
        assert_eq!(err.0, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn corrupt_gzip_is_a_bad_request() {
        let err = decompress("gzip", Bytes::from_static(b"not gzip"), 1024).unwrap_err();
        assert_eq!(err.0, StatusCode::BAD_REQUEST);
        assert_eq!(
            decompress("br", Bytes::new(), 1).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }
}
