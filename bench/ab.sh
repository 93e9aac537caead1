#!/bin/bash
# Paired A/B of two live HTTP proxies on this machine (docs/benchmarks.md, "Paired A/B runs").
#
#   bench/ab.sh PORT_A PID_A PORT_B PID_B [PAIRS=10] [SECONDS=3] [HOST=bench]
#
# Start both proxies yourself, pinned to the proxy core (e.g. `taskset -c 1 node ...`), in front of the
# same upstream on 127.0.0.1. Each pair runs `wrk -t1 -c50` on core 0 against A and B (A first in odd
# pairs, B first in even ones) for SECONDS each (after one unmeasured warm-up run of each), and prints
# CPU µs per request of each (utime+stime of PID from /proc, all its threads), the hypervisor's steal
# on core 1 during the run, req/s, and the ratio B/A of CPU per request. Compare
# medians over the pairs: single runs on a shared VM drift by more than the effects measured.
# Loopback only; bounded by PAIRS x 2 x SECONDS; signals nothing.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,12p "$0"; exit 2; }
pa=$1; ida=$2; pb=$3; idb=$4; pairs=${5:-10}; secs=${6:-3}; host=${7:-bench}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
core1() { awk '/^cpu1 /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

one() { # port pid -> "ns_per_req steal% rps"
  local s0 t0 out t1 s1 total hz
  hz=$(getconf CLK_TCK)
  s0=$(core1); t0=$(cpu_ticks "$2")
  out=$(taskset -c 0 wrk -t1 -c50 -d"${secs}s" -H "Host: $host" "http://127.0.0.1:$1/")
  t1=$(cpu_ticks "$2"); s1=$(core1)
  total=$(echo "$out" | grep -oE '[0-9]+ requests in' | grep -oE '^[0-9]+')
  [ "${total:-0}" -gt 0 ] || { echo "no requests completed against port $1" >&2; exit 1; }
  echo "$(( (t1 - t0) * 1000000000 / hz / total )) $(echo "$s0 $s1" | awk '{printf "%d", 100*($3-$1)/(($4-$2)>0?($4-$2):1)}') $(( total / secs ))"
}

# Warm both up first (JIT, pools, V8 heap sizing): not measured.
one "$pa" "$ida" >/dev/null; one "$pb" "$idb" >/dev/null
for i in $(seq 1 "$pairs"); do
  # A first in odd pairs, B first in even ones: in paired runs at 1000 req/s (rategen, one core) the
  # first run of a pair read ~7 % higher whichever proxy it was (docs/benchmarks.md, "The order
  # within a pair"); not measured for wrk here, and alternating costs nothing where it does not apply.
  if [ $((i % 2)) = 1 ]; then
    read -r a_ns a_st a_rps < <(one "$pa" "$ida")
    read -r b_ns b_st b_rps < <(one "$pb" "$idb")
  else
    read -r b_ns b_st b_rps < <(one "$pb" "$idb")
    read -r a_ns a_st a_rps < <(one "$pa" "$ida")
  fi
  echo "A ${a_ns}ns/req steal ${a_st}% ${a_rps} req/s | B ${b_ns}ns/req steal ${b_st}% ${b_rps} req/s | B/A CPU $(awk -v a="$a_ns" -v b="$b_ns" 'BEGIN{printf "%.2f", b/a}') req/s $(awk -v a="$a_rps" -v b="$b_rps" 'BEGIN{printf "%.2f", b/a}')"
done
