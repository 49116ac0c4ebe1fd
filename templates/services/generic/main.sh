# The __NAME__ service (type generic): replace this script with your program.
# `__NAME__ --version` prints its version; otherwise it runs until stopped.
if [ "${1:-}" = --version ]; then
  echo "__NAME__ 0.1.0"
  exit 0
fi
echo "__NAME__: running"
while true; do sleep 3600; done
