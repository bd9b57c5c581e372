# Builds the one `labfleet` binary; every service runs it with another subcommand.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin labfleet

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates qemu-utils \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/labfleet --create-home labfleet
COPY --from=build /src/target/release/labfleet /usr/local/bin/labfleet
USER labfleet
WORKDIR /var/lib/labfleet
ENV LABFLEET_BIND=0.0.0.0:8080 \
    LABFLEET_DATA_DIR=/var/lib/labfleet
EXPOSE 8080
ENTRYPOINT ["labfleet"]
CMD ["serve"]
