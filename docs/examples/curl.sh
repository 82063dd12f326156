#!/usr/bin/env bash
# The README's curl walk-through as a script. Start a cluster with `make up`, then:
#
#   bash docs/examples/curl.sh
#
# TRIBUTARY_REST overrides the API base (default http://127.0.0.1:8000/api/v1) and
# TRIBUTARY_DATASET the dataset name (default: articles-<pid>, so reruns never collide).
# Any non-2xx answer stops the script (curl --fail-with-body) and prints the error body.
set -euo pipefail

API="${TRIBUTARY_REST:-http://127.0.0.1:8000/api/v1}"
DATASET="${TRIBUTARY_DATASET:-articles-$$}"

call() {  # call METHOD PATH [JSON]: prints the answer, fails on an HTTP error
  local method=$1 path=$2
  shift 2
  echo "+ $method $path" >&2
  if [ $# -gt 0 ]; then
    curl -sS --fail-with-body -X "$method" "$API$path" -H 'Content-Type: application/json' -d "$1"
  else
    curl -sS --fail-with-body -X "$method" "$API$path"
  fi
  echo
}

# Create a dataset. shard_count is optional (default: the number of nodes).
call POST /datasets "{\"name\": \"$DATASET\", \"dimensions\": 4, \"metric_type\": \"cosine\"}"
trap 'curl -sS -X DELETE "$API/datasets/$DATASET" >/dev/null 2>&1 || true' EXIT

# Insert vectors (POST .../vectors and POST .../vectors/batch are the same operation).
call POST "/datasets/$DATASET/vectors" '{
  "vectors": [
    {"id": "a1", "document_id": "doc1", "values": [0.1, 0.2, 0.3, 0.4],
     "content": "rivers join", "metadata": {"lang": "en"}},
    {"id": "a2", "values": [0.4, 0.3, 0.2, 0.1], "content": "streams part"}
  ]}'

# Search: top_k, include_content, include_metadata, ef_search, min_score, max_distance.
call POST "/datasets/$DATASET/search" '{"query_vector": [0.1, 0.2, 0.3, 0.4],
  "options": {"top_k": 5, "include_content": true, "include_metadata": true}}'

call GET "/datasets/$DATASET/vectors/a1"          # get one vector (cosine: values normalized)
# Change only the content; document_id, metadata and values stay (AIP-134). To clear a field,
# name it in ?update_mask= and leave it out of the body.
call PUT "/datasets/$DATASET/vectors/a1" '{"content": "rivers merge"}'
call DELETE "/datasets/$DATASET/vectors/a2"                         # delete one
call DELETE "/datasets/$DATASET/vectors/batch" '{"vector_ids": ["a1"]}'
call GET /datasets                                                  # list
call GET "/datasets/$DATASET"                                       # with vector_count
call DELETE "/datasets/$DATASET"                                    # delete
trap - EXIT
call GET /health        # 200 once the meta group has a leader and every node is live
echo "ok" >&2
