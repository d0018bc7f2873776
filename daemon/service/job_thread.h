/* The job thread: one per running job. It parses the job text of its slot, checks the job's
 * devices against the worker's, and runs it through core's dd_job_run (train/job.h: one device,
 * ranks on this machine, or a node of a multi-node job meeting through common/rdzv.c; core asks the
 * path policy, service/paths.c, as it opens each file). It turns the trainer's hooks into ring items
 * (service/events.h) and ends with exactly one ITEM_DONE item.
 *
 * Its side of the daemon's state (service/state.h): it reads the daemon's config, threads, paths,
 * password, worker name and queue key, its own slot, and j->stop (set by the loop); it writes only
 * the ring, the daemon's `ring_dropped` and the slot's `exited`, `dropped` and job-thread fields (among
 * them `mx_device` and `mx_outcome`, which the metrics read at the ring items that follow them). */
#ifndef DD_JOB_THREAD_H
#define DD_JOB_THREAD_H

/* The thread's body (uv_thread_create): `arg` is the job's slot (job_t *), claimed by the loop with
 * its id, entry, owner, keys, text (or early_error) and attempt filled in. Returns when the job's
 * final item is in the ring. */
void job_thread(void *arg);

#endif
