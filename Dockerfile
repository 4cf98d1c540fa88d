# Multi-stage build: the same `cargo build --release --locked` that CI runs, then a small
# non-root runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY configs ./configs
COPY proto ./proto
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin sluice

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home sluice \
    && mkdir -p /var/lib/sluice && chown 10001:10001 /var/lib/sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
USER 10001:10001
WORKDIR /var/lib/sluice
EXPOSE 4317 4318 8888 13133
ENTRYPOINT ["/usr/local/bin/sluice"]
