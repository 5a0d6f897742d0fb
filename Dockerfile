# projectord in a container: configured by the environment only.
#   docker build -t projectord .
#   docker run -e PROJECTORD_DATABASE_URL=postgresql://user:pass@host/app projectord
# Environment: PROJECTORD_DATABASE_URL (conninfo or URI; or libpq's PG*
# variables), PROJECTORD_LOG_LEVEL. No config file: the default path
# /etc/projectord/projectord.conf is absent, which is fine. The SQL
# migrations are in /usr/share/projectord/sql: `docker run ... projectord
# migrate` applies them (as the database's owner).

# --- build: compilers and -dev packages, thrown away afterwards ----------
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libpq-dev libev-dev libconfig-dev libjansson-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt README.md CHANGELOG.md LICENSE ./
COPY docs docs
COPY src src
COPY projections projections
COPY sql sql
COPY etc etc
COPY systemd systemd
COPY man man
COPY examples/declared examples/declared
RUN cmake -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPROJECTORD_TESTS=OFF \
      -DCMAKE_INSTALL_PREFIX=/usr \
 && cmake --build build -j"$(nproc)" \
 && DESTDIR=/out cmake --install build --strip

# --- runtime: the binary, its shared libraries, the SQL ------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libpq5 libev4 libconfig9 libjansson4 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin projectord
COPY --from=build /out/usr/bin/projectord /usr/bin/projectord
COPY --from=build /out/usr/share/projectord /usr/share/projectord
USER 10001:10001
# SIGTERM lets the batches in flight finish (up to 30 s): give it
# `docker stop -t 45` / compose's stop_grace_period.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["projectord", "status", "--check"]
ENTRYPOINT ["projectord"]
CMD ["run"]
