-- Rendered by MigrateKeysOperator as a Jinja template: only the first {{ params.partitions }} keys.
SELECT key_hash AS "hash", owner AS "externalId"
FROM api_keys
WHERE id <= {{ params.partitions }}
ORDER BY id
