# The api service of the example: answers "migrate" and otherwise serves forever.
if [ "${1:-}" = migrate ]; then
  echo "api: schema is up to date"
  exit 0
fi
echo "api: listening"
while true; do sleep 3600; done
