#!/bin/bash
# The integration guide's "Test 1: Crear Suscripción y Enviar Evento" against
# Hookline: its three requests unchanged, the address, key, target (and secret)
# taken from the environment, and a stop when the subscription is refused.
# Needs curl and jq.
#
#   HOOKLINE_URL=http://localhost:4000 HOOKLINE_TOKEN=hkl_... \
#   TARGET_URL=https://webhook.site/<your-id> bash examples/test-webhooks.sh
#
# The last step prints {status, attempts, last_error} of the tenant's newest
# invoice.created deliveries (the first page: 100, newest first).
set -euo pipefail

BASE_URL="${HOOKLINE_URL:-http://localhost:4000}"
while [ "${BASE_URL%/}" != "$BASE_URL" ]; do BASE_URL="${BASE_URL%/}"; done # http://localhost:4000/ too
TOKEN="${HOOKLINE_TOKEN:-YOUR_TOKEN}"
TARGET_URL="${TARGET_URL:-https://webhook.site/12345-abcde}"
WEBHOOK_SECRET="${WEBHOOK_SECRET:-my-webhook-secret}"
API="$BASE_URL/api/v1/tenant/webhooks"

# 1. Create subscription
CREATED=$(curl -sS -X POST "$API/subscriptions" \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -d '{
    "event": "invoice.created",
    "url": "'"$TARGET_URL"'",
    "secret": "'"$WEBHOOK_SECRET"'"
  }') || { echo "Hookline not reachable at $BASE_URL" >&2; exit 1; }
SUBSCRIPTION=$(echo "$CREATED" | jq '.id' 2>/dev/null || true)
if [ -z "$SUBSCRIPTION" ] || [ "$SUBSCRIPTION" = null ]; then
  # Hookline's answer says why (a bad token, a URL it refuses, ...): nothing more can work.
  # Something else (no answer, or not JSON) is shown as it came.
  REASON=$(echo "$CREATED" | jq -c '.error // .' 2>/dev/null || true)
  echo "Subscription not created: ${REASON:-${CREATED:-an empty answer from $API/subscriptions}}" >&2
  exit 1
fi

echo "Subscription created: $SUBSCRIPTION"

# 2. Trigger event
curl -s -X POST "$API/deliveries" \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -d '{
    "event": "invoice.created",
    "payload": {
      "invoice_id": "inv-123",
      "amount": 1500.00,
      "customer": "Acme Corp"
    }
  }' | jq '.'

# 3. Check delivery status
sleep 2
curl -s -X GET "$API/deliveries?event=invoice.created" \
  -H "Authorization: Bearer $TOKEN" | jq '.[] | {status, attempts, last_error}'
