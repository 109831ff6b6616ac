# Multi-stage: build with the Rust toolchain, run on a slim Debian.
# Run with your configuration mounted over the example, listening on all addresses
# ([listen] address = "0.0.0.0:6432", and likewise metrics_address, health_address):
#   docker run -v $PWD/proxy.toml:/etc/pgroute/proxy.toml:ro -p 6432:6432 -p 9931:9931 pgroute
# `docker stop` sends SIGTERM: a smart shutdown (running transactions finish).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin pgroute

FROM debian:bookworm-slim
RUN useradd --system --no-create-home pgroute
COPY --from=build /src/target/release/pgroute /usr/local/bin/pgroute
COPY proxy.toml /etc/pgroute/proxy.toml
USER pgroute
EXPOSE 6432 9930 9931
ENTRYPOINT ["pgroute"]
CMD ["--config", "/etc/pgroute/proxy.toml"]
