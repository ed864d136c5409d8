#!/usr/bin/env bash
# wasmrule hot reload, step by step: an MQTT message turning into Redis state, a rule
# replaced in place while it serves, and a broken file refused, against mosquitto.
#
#   examples/hot-reload.sh          run the walkthrough and stop
#   examples/hot-reload.sh --keep   leave everything running until Ctrl-C
#
# It installs redis-server, mosquitto and their clients with apt-get when they are
# missing (asking sudo if you are not root), builds wasmrule and the rules, starts a
# private redis-server, mosquitto and wasmrule on free loopback ports (never the
# default ones), then drops rules into wasmrule's rules directory while publishing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
keep=0
[ "${1:-}" = "--keep" ] && keep=1

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# --- 1. What this machine lacks -------------------------------------------------
missing=()
have redis-server || missing+=(redis-server)
have redis-cli || missing+=(redis-tools)
have mosquitto || missing+=(mosquitto)
have mosquitto_pub || missing+=(mosquitto-clients)
if [ ${#missing[@]} -gt 0 ]; then
    say "Installing ${missing[*]} (apt-get)"
    sudo=""
    [ "$(id -u)" != 0 ] && sudo=sudo
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust first (https://rustup.rs), then run this again." >&2
    exit 1
fi
PATH="$PATH:/usr/sbin"

# --- 2. Build ------------------------------------------------------------------
say "Building wasmrule (release) and the rules"
(cd "$root" && cargo build --release -q -p wasmrule)
"$root/rules-wasm/build.sh" rust
wasmrule="$root/target/release/wasmrule"

# --- 3. Start the servers --------------------------------------------------------
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
}
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listening on 127.0.0.1:$1" >&2
    exit 1
}

redis_port=$(free_port)
mqtt_port=$(free_port)
say "Starting redis-server on 127.0.0.1:$redis_port and mosquitto on 127.0.0.1:$mqtt_port"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
pids+=($!)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mqtt_port" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
wait_port "$redis_port"
wait_port "$mqtt_port"

mkdir "$work/rules"
say "Starting wasmrule with an empty rules directory ($work/rules)"
echo "\$ wasmrule run --mqtt-url mqtt://127.0.0.1:$mqtt_port --redis-url redis://127.0.0.1:$redis_port --rules-dir $work/rules"
"$wasmrule" run --mqtt-url "mqtt://127.0.0.1:$mqtt_port" --redis-url "redis://127.0.0.1:$redis_port" \
    --rules-dir "$work/rules" >"$work/wasmrule.log" 2>&1 &
pids+=($!)

rcli() { redis-cli -p "$redis_port" "$@"; }
pub() { mosquitto_pub -p "$mqtt_port" -q 1 -t "$1" -m "$2"; }
# Publishes until the Redis command prints something (the first publish may come
# before the new rule's subscription is in place).
publish_until() {
    local topic=$1 payload=$2
    shift 2
    for _ in $(seq 40); do
        pub "$topic" "$payload"
        sleep 0.1
        if [ -n "$("$@")" ]; then return 0; fi
    done
    echo "no result after 4 s; wasmrule log:" >&2
    cat "$work/wasmrule.log" >&2
    exit 1
}

payload='{"message":"this is a stored message","clientId":"dev-1","duration":"12s","temp":21.5,"hum":40.2}'

say "Drop in the EMQX demo's rule: HSET emqx_messages \${clientid} \${payload.temp}"
echo "\$ cp rules-wasm/dist/store-last-message.wasm $work/rules/demo.wasm"
cp "$root/rules-wasm/dist/store-last-message.wasm" "$work/rules/demo.wasm"
echo "\$ mosquitto_pub -t store-last-message/dev-1 -m '$payload'"
publish_until store-last-message/dev-1 "$payload" rcli HGET emqx_messages dev-1
echo "\$ redis-cli HGETALL emqx_messages"
rcli HGETALL emqx_messages

say "Replace it in place with topic-counter: HINCRBY mqtt_topic_count \${topic} 1"
echo "\$ cp rules-wasm/dist/topic-counter.wasm $work/rules/demo.wasm"
cp "$root/rules-wasm/dist/topic-counter.wasm" "$work/rules/demo.wasm"
publish_until store-last-message/dev-2 '{"temp":19}' rcli HGET mqtt_topic_count store-last-message/dev-2
pub sensors/hall/temp 22.1
sleep 0.3
echo "\$ redis-cli HGETALL mqtt_topic_count"
rcli HGETALL mqtt_topic_count

say "Drop in a broken file: it is refused, the running rule keeps serving"
echo "\$ echo 'not wasm' > $work/rules/broken.wasm"
echo 'not wasm' >"$work/rules/broken.wasm"
sleep 0.5
pub sensors/hall/temp 22.3
sleep 0.3
grep -h "broken.wasm" "$work/wasmrule.log" | tail -n 1 || true
echo "\$ redis-cli HGET mqtt_topic_count sensors/hall/temp"
rcli HGET mqtt_topic_count sensors/hall/temp

say "wasmrule's log"
cat "$work/wasmrule.log"

if [ "$keep" = 1 ]; then
    say "Still running. Publish with: mosquitto_pub -p $mqtt_port -t <topic> -m <payload>"
    echo "Redis: redis-cli -p $redis_port   Rules: $work/rules   Ctrl-C to stop."
    wait
fi
say "Done. Next: docs/abi.md to write a rule, docs/configuration.md to run one for real."
