/* Writing key/value databases as Caffe's db::NEW does (util/db_lmdb.cpp, util/db_leveldb.cpp):
 * LMDB (a new directory holding data.mdb and lock.mdb, refused when it exists) or LevelDB (a new
 * database directory, refused when it exists). Records are buffered and written in one
 * transaction at each dd_db_writer_commit, as Caffe's Transaction does; an LMDB whose map fills up
 * is grown (the map size doubled) and the transaction written again. Keys are written as given
 * (Caffe's convert_imageset uses "%08d_NAME", so the order of the keys is the order written). */
#ifndef DD_DB_WRITE_H
#define DD_DB_WRITE_H

#include <stddef.h>

typedef struct dd_db_writer dd_db_writer;

/* Creates the database `path` with `backend` "lmdb" or "leveldb". Returns 0, DD_EINVAL (an
 * unknown backend), DD_EIO (the path exists, or the library's error) with a message naming path. */
int dd_db_writer_open(dd_db_writer **out, const char *backend, const char *path, char *err, size_t errlen);

/* Adds one record to the current transaction (copied). Returns 0 or DD_ENOMEM. */
int dd_db_writer_put(dd_db_writer *w, const char *key, size_t klen, const void *val, size_t vlen, char *err,
                     size_t errlen);

/* Writes the current transaction. Returns 0 or DD_EIO with the library's message. */
int dd_db_writer_commit(dd_db_writer *w, char *err, size_t errlen);

/* Commits what is pending (unless `discard`), closes and frees. NULL is a no-op. Returns 0 or the
 * commit's error. */
int dd_db_writer_close(dd_db_writer *w, int discard, char *err, size_t errlen);

#endif
