/* sign.h - what a stream's source signs, and signing and verifying it
 * with whatever key its certificate has (docs/PROTOCOL.md, "Signatures"):
 *
 *   head     = "odo-journal head v1" 0x00 | u8 len | stream id | u64be rev
 *              | hash[32]
 *   snapshot = "odo-journal snapshot v1" 0x00 | u8 len | stream id
 *              | u64be rev | hash[32] | SHA-256(data)[32] | u8 len | format
 *
 * Ed25519 keys sign the message itself; RSA keys sign its SHA-256 with
 * RSA-PSS (salt as long as the digest); EC keys with ECDSA over SHA-256. */
#ifndef ODO_SIGN_H
#define ODO_SIGN_H

#include <openssl/evp.h>

#include "odo.h"

#define ODO_SIGNED_MAX (64 + ODO_MAX_STREAM_ID + 8 + 32 + 32 + 256)

/* The bytes a head or a snapshot signature covers; returns their length. */
size_t odo_head_message(uint8_t *out, const char *stream, size_t len,
                        uint64_t rev, const uint8_t hash[ODO_HASH_LEN]);
/* (The snapshot message hashes data itself, with no shared context: safe
 * on a worker thread; 0 when hashing fails.) */
size_t odo_snapshot_message(uint8_t *out, const char *stream, size_t len,
                            uint64_t rev, const uint8_t hash[ODO_HASH_LEN],
                            const void *data, size_t data_len,
                            const char *format, size_t format_len);

/* Signs a source snapshot: the snapshot message over SHA-256(data).
 * Safe on a worker thread (no shared context). 0 with e set on failure. */
int odo_sign_snapshot(EVP_PKEY *key, const char *stream, size_t len,
                      uint64_t rev, const uint8_t hash[ODO_HASH_LEN],
                      const void *data, size_t n, const char *format,
                      size_t format_len, uint8_t *sig, size_t *siglen,
                      odo_err *e);
/* Signs msg; *siglen in: room, out: length. 0 with e set on failure. */
int odo_sign(EVP_PKEY *key, const uint8_t *msg, size_t n, uint8_t *sig,
             size_t *siglen, odo_err *e);
/* 1 when sig is key's signature of msg. */
int odo_verify(EVP_PKEY *pub, const uint8_t *msg, size_t n,
               const uint8_t *sig, size_t siglen);

/* A public key from SubjectPublicKeyInfo DER, checked to belong to
 * source_id (its hex SHA-256); NULL with e set otherwise. */
EVP_PKEY *odo_source_key(const uint8_t *der, size_t n, const char *source_id,
                         size_t id_len, odo_err *e);

void odo_sign_open(lua_State *L);

#endif
