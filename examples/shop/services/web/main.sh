# The web service of the example.
echo "web: listening"
while true; do sleep 3600; done
