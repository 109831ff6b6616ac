# Multi-stage: build with the Rust toolchain, run on a slim Debian.
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
EXPOSE 6432 9930
ENTRYPOINT ["pgroute"]
CMD ["--config", "/etc/pgroute/proxy.toml"]
