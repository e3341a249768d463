"""Image downloads done by the agent itself (issue 14; README, Downloads).

The agent fetches an image's manifest, config and layers from the registry (OCI
distribution API) into a content-addressed cache under the state directory, verifying
every blob against its digest, resuming interrupted blobs from the bytes on disk (HTTP
`Range`), under a bandwidth limit shared by all downloads, after a disk-space preflight;
the engine pulls the image from the agent's loopback registry as the blobs land, or loads
it as an archive (`cua.engine.docker`, `POST /images/load`) when it cannot.

Modules: `registry` (HTTP + auth), `link` (its connection, read into one buffer),
`engine_registries` (the engine's insecure registries and mirrors, which it follows),
`proxy` (the environment's HTTP proxy, its CONNECT tunnels),
`manifests` (pure: media types, platform choice), `cache` (the blob store), `ratelimit`
(token bucket), `preflight` (pure space check), `fetch` (the whole pull of one image),
`landing` (a blob's bytes followed as they land), `serve` (the loopback registry).
"""
