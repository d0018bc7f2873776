/* Reading key/value databases as Caffe's db::READ does (util/db_lmdb.cpp, util/db_leveldb.cpp):
 * a cursor over the records in key order (LMDB's and LevelDB's default byte-wise comparison),
 * which wraps to the first record after the last, as Caffe's DataLayer::Next does.
 *
 * LMDB: a directory holding data.mdb, opened read-only (MDB_RDONLY | MDB_NOTLS, and MDB_NOLOCK
 * where the lock file cannot be written, as Caffe does), one read transaction for the cursor's
 * life. LevelDB: opened without create_if_missing. A cursor is used by one thread at a time (any
 * thread). The key and value it hands out stay valid until the cursor moves. */
#ifndef DD_DB_READ_H
#define DD_DB_READ_H

#include <stddef.h>
#include <stdint.h>

typedef struct dd_db_cursor dd_db_cursor;

/* Opens `path` with `backend` "lmdb" or "leveldb" and puts the cursor on the first record.
 * Returns 0; DD_EINVAL (an unknown backend); DD_ENOTFOUND (no such database: "PATH: no LMDB here
 * (No such file or directory)"); DD_EIO (the library's error); DD_ECORRUPT ("PATH: the database
 * holds no records"). Messages name the path. */
int dd_db_cursor_open(dd_db_cursor **out, const char *backend, const char *path, char *err, size_t errlen);

/* The current record. */
void dd_db_cursor_get(const dd_db_cursor *c, const uint8_t **key, size_t *klen, const uint8_t **val, size_t *vlen);

/* Moves to the next record, or back to the first after the last (*wrapped = 1 then; may be NULL).
 * Returns 0 or DD_EIO with the library's message. */
int dd_db_cursor_next(dd_db_cursor *c, int *wrapped, char *err, size_t errlen);

/* Back to the first record. Returns 0 or DD_EIO. */
int dd_db_cursor_first(dd_db_cursor *c, char *err, size_t errlen);

/* The number of records: LMDB's entry count; LevelDB has none, so a separate iterator walks the
 * keys once. Returns 0 and *n, or DD_EIO. The cursor does not move. */
int dd_db_cursor_count(dd_db_cursor *c, int64_t *n, char *err, size_t errlen);

/* Moves to the record with this key. Returns 0; DD_ENOTFOUND when there is none; DD_EIO. */
int dd_db_cursor_seek(dd_db_cursor *c, const uint8_t *key, size_t klen, char *err, size_t errlen);

/* The database's path as opened. */
const char *dd_db_cursor_path(const dd_db_cursor *c);

/* Closes (ends the read transaction) and frees. NULL is a no-op. */
void dd_db_cursor_close(dd_db_cursor *c);

#endif
