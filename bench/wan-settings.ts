// The emulated WAN of the relocation and copy benches (bench/relocate.ts, bench/copy-throughput.ts):
// per direction of every proxied TCP connection (src/dev/wan-proxy.ts).
export const WAN_ONE_WAY_DELAY_MS = 20
export const WAN_CAP_MBIT_PER_SEC = 200
