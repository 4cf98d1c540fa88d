//! OTLP/gRPC: tonic's framing, compression and size limit with a codec that keeps the
//! request as bytes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::server::{Grpc, UnaryService};
use tonic::{Code, Request, Response, Status};

use super::config::GrpcConfig;
use super::{Intake, Rejection};
use crate::otlp::codec::RawCodec;
use crate::otlp::{Signal, rpc};
use crate::pipeline::consumer::Refusal;
use crate::telemetry::server::{self, ShutdownRx};

pub(super) fn serve(
    listener: TcpListener,
    config: &GrpcConfig,
    intake: Arc<Intake>,
    shutdown: ShutdownRx,
) -> JoinHandle<()> {
    let limit = (config.max_recv_msg_size_mib as usize).saturating_mul(1024 * 1024);
    server::serve(
        listener,
        move |req: http::Request<hyper::body::Incoming>, _| {
            let intake = intake.clone();
            async move {
                let signal = Signal::ALL
                    .into_iter()
                    .find(|s| s.grpc_path() == req.uri().path());
                let Some(signal) = signal else {
                    return Status::unimplemented(format!("unknown method {}", req.uri().path()))
                        .into_http();
                };
                let mut grpc = Grpc::new(RawCodec)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .send_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(limit);
                let mut response = grpc.unary(Export { signal, intake }, req).await;
                oversized_is_resource_exhausted(&mut response);
                response
            }
        },
        shutdown,
    )
}

/// tonic answers a message above the size limit with OUT_OF_RANGE, which OTLP clients retry
/// forever; grpc-go (and so the collector) answers RESOURCE_EXHAUSTED, which they do not
/// retry without RetryInfo.
fn oversized_is_resource_exhausted<B>(response: &mut http::Response<B>) {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        // grpc-message is percent-encoded.
        .is_some_and(|v| String::from_utf8_lossy(v.as_bytes()).contains("too%20large"));
    if out_of_range && too_large {
        let code = (Code::ResourceExhausted as i32).to_string();
        if let Ok(value) = http::HeaderValue::from_str(&code) {
            headers.insert("grpc-status", value);
        }
    }
}

struct Export {
    signal: Signal,
    intake: Arc<Intake>,
}

impl UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let intake = self.intake.clone();
        let signal = self.signal;
        Box::pin(async move {
            match intake.accept(signal, request.into_inner()).await {
                // An empty Export*ServiceResponse encodes to zero bytes.
                Ok(()) => Ok(Response::new(Bytes::new())),
                Err(rejection) => Err(to_status(rejection)),
            }
        })
    }
}

fn to_status(rejection: Rejection) -> Status {
    match rejection {
        Rejection::Invalid(message) => Status::invalid_argument(message),
        Rejection::NoPipeline(signal) => {
            Status::unimplemented(format!("this receiver is not in any {signal} pipeline"))
        }
        Rejection::Refused(refusal) => {
            let (code, delay) = match refusal {
                Refusal::Overloaded => (Code::ResourceExhausted, Duration::from_secs(1)),
                Refusal::ShuttingDown => (Code::Unavailable, Duration::from_secs(5)),
            };
            let message = refusal.to_string();
            let details = rpc::status_with_retry_info(code as i32, &message, delay);
            Status::with_details(code, message, details.into())
        }
    }
}
