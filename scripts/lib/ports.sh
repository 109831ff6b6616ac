# shellcheck shell=bash
# Sourced by scripts/cluster.sh and scripts/patroni.sh.

# Print COUNT distinct free TCP ports on 127.0.0.1, one per line. The kernel
# picks them (bind to port 0); all sockets are held until every port is
# chosen so the ports are distinct. A port can still be taken by someone else
# before the server binds it; start_node retries with a fresh port then.
free_ports() {
    local count=$1
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$count" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    print(s.getsockname()[1])
for s in socks:
    s.close()
PY
    else
        # Fallback: random ports in 20000..29999 that nothing listens on.
        local -a picked=()
        local p
        while [[ ${#picked[@]} -lt $count ]]; do
            p=$((20000 + RANDOM % 10000))
            [[ " ${picked[*]} " == *" $p "* ]] && continue
            if ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then
                continue
            fi
            picked+=("$p")
        done
        printf '%s\n' "${picked[@]}"
    fi
}
