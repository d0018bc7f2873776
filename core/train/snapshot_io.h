/* A solver's snapshot files on disk (used by solver.c): the names (PREFIX_iter_N.caffemodel and
 * .solverstate), and reading and writing them in the job's snapshot folder through its directory
 * descriptor, so that a snapshots/ swapped for a symlink mid-job, or a symlink planted at a
 * snapshot's (or its temporary file's) name, never leads a write or a read elsewhere. */
#ifndef DD_SNAPSHOT_IO_H
#define DD_SNAPSHOT_IO_H

#include <stddef.h>

#include "base/path_policy.h"
#include "caffe.pb-c.h"

#define DD_SNAP_ITER "_iter_"
#define DD_SNAP_STATE ".solverstate"

/* Write `np` / `st` atomically (format/fileio.h) to `path`: with `dirfd` >= 0 as the last component
 * of `path` in the folder `dirfd` (`path` names it in messages), otherwise at `path` itself.
 * Return as dd_caffemodel_write / dd_solverstate_write. */
int dd_snapshot_write_model(const Caffe__NetParameter *np, int dirfd, const char *path, char *err, size_t errlen);
int dd_snapshot_write_state(const Caffe__SolverState *st, int dirfd, const char *path, char *err, size_t errlen);

/* Reads the .solverstate `path` (with `dirfd` >= 0: its last component in that folder, not through
 * a symlink). Returns as dd_solverstate_read. */
int dd_snapshot_read_state(Caffe__SolverState **out, int dirfd, const char *path, char *err, size_t errlen);

/* Reads the .caffemodel the .solverstate `state_path` names (`learned_net`), its path into `model`
 * (`len` bytes) for messages. A relative learned_net (or an absolute one in the state's own folder)
 * is its last component beside the state: in `dirfd` (not through a symlink) when `dirfd` >= 0. An
 * absolute one elsewhere is a path like the job's own inputs: opened through `policy`
 * (DD_PATH_READ, field "STATE: learned_net"), so the daemon refuses one outside its roots before a
 * byte is read. Returns as dd_caffemodel_read, or the policy's refusal. */
int dd_snapshot_read_model(Caffe__NetParameter **out, char *model, size_t len, int dirfd, const dd_path_policy *policy,
                           const char *state_path, const char *learned_net, char *err, size_t errlen);

#endif
