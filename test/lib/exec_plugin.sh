#!/bin/sh
# A client-go exec credential plugin for tests: counts its runs and hands out tokens that
# expire. Everything it does is read from files in the directory $PLUGIN_DIR, which a test
# sets through the kubeconfig's exec env:
#   calls        how many times it ran (it writes this; each run adds one)
#   tokens       one token per line: run N hands out line N (the last line once they run out)
#   lifetime     seconds each token is good for (expirationTimestamp = now + lifetime);
#                without the file, no expirationTimestamp
#   api-version  the apiVersion it answers with (default client.authentication.k8s.io/v1)
#   exec-info    it writes $KUBERNETES_EXEC_INFO here, and its stdin's kind to stdin
set -eu
dir="${PLUGIN_DIR:?PLUGIN_DIR is not set}"
calls=$(( $(cat "$dir/calls" 2>/dev/null || echo 0) + 1 ))
echo "$calls" > "$dir/calls.tmp"
mv "$dir/calls.tmp" "$dir/calls"
printf '%s' "${KUBERNETES_EXEC_INFO:-}" > "$dir/exec-info"
if [ -t 0 ]; then echo terminal > "$dir/stdin"; else echo other > "$dir/stdin"; fi
lines=$(wc -l < "$dir/tokens")
line=$(( calls < lines ? calls : lines ))
token=$(sed -n "${line}p" "$dir/tokens")
api_version=$(cat "$dir/api-version" 2>/dev/null || echo client.authentication.k8s.io/v1)
expiry=""
if [ -f "$dir/lifetime" ]; then
  expiry=$(date -u -d "+$(cat "$dir/lifetime") seconds" +%Y-%m-%dT%H:%M:%SZ)
  expiry=",\"expirationTimestamp\":\"$expiry\""
fi
echo "exec plugin run $calls" >&2
printf '{"apiVersion":"%s","kind":"ExecCredential","status":{"token":"%s"%s}}\n' \
  "$api_version" "$token" "$expiry"
