// Small file-system helpers shared by the layers that write files.
//
// Every file llamac publishes goes through one protocol (fs_publish): written under NAME.tmp, fsync'd,
// renamed over NAME, then the directory fsync'd. A crash or a full disk at any moment leaves either the
// old file or the whole new one, never a torn one, and a failed write removes its .tmp. Paths are built
// on the heap (fs_join): no fixed-size buffers, so long paths work or fail with the OS's own error.
#pragma once
#include <stddef.h>

// Creates dir and its missing parents (as mkdir -p). -1 with err_set naming the path on failure.
int fs_mkdir_p(const char *dir);
// fsync of a file or directory by path; -1 (errno set) on failure.
int fs_fsync_path(const char *path);
// "a/b" in a new heap string (caller frees).
char *fs_join(const char *a, const char *b);
// printf into a new heap string (caller frees).
char *fs_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Publishes `tmp` as `path`: fsync(tmp), rename(tmp, path), fsync(directory of path). On failure tmp is
// removed and -1 returned with err_set naming path and the cause.
int fs_publish(const char *tmp, const char *path);
// Writes n bytes as `path` through PATH.tmp and fs_publish. -1 with err_set (path, cause); no .tmp left.
int fs_write_atomic(const char *path, const void *data, size_t n);
// Copies a file through a temporary name and fs_publish, so `to` is either the old file or the whole new
// one. -1 with err_set naming the file on failure.
int fs_copy_file(const char *from, const char *to);
// Takes the advisory lock DIR/lock (an open-file-description lock, released by the kernel when the
// process ends, so a dead job's lock never blocks a requeue) and writes "host pid" into it. Returns the
// descriptor to keep open for the life of the job, or -1 with err_set naming the holder.
int fs_lock_dir(const char *dir);
