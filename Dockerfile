# Multi-stage build of the edge and the backend services (one image, two binaries).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p edge -p services

FROM debian:bookworm-slim
RUN groupadd -r edge && useradd -r -g edge edge
COPY --from=build /src/target/release/edge /usr/local/bin/edge
COPY --from=build /src/target/release/services /usr/local/bin/services
COPY upstreams.toml /etc/edge/upstreams.toml
USER edge
# 443/udp: HTTP/3 beside HTTPS on the same port.
EXPOSE 80 443 443/udp
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["edge", "healthcheck"]
ENTRYPOINT ["edge"]
CMD ["run", "--config", "/etc/edge/upstreams.toml"]
