# The parts of libfuse 3's low-level API (fuse_lowlevel.h, FUSE_USE_VERSION
# 312) and of statvfs that _fuse.pyx uses.  Cython needs only the names:
# the C compiler checks them against the real headers.

cdef extern from "<sys/statvfs.h>" nogil:
    struct statvfs:
        unsigned long f_bsize
        unsigned long f_frsize
        unsigned long f_blocks
        unsigned long f_bfree
        unsigned long f_bavail
        unsigned long f_files
        unsigned long f_ffree
        unsigned long f_favail
        unsigned long f_namemax

cdef extern from *:
    """
    #define FUSE_USE_VERSION 312
    #include <fuse_lowlevel.h>
    /* libfuse 3.17 and later: the kernel then asks for no
       security.capability before each write (it sets SB_NOSEC). */
    #ifdef FUSE_CAP_HANDLE_KILLPRIV_V2
    #define BD_KILLPRIV_V2 FUSE_CAP_HANDLE_KILLPRIV_V2
    #else
    #define BD_KILLPRIV_V2 0
    #endif
    """
    unsigned BD_KILLPRIV_V2
    ctypedef unsigned long fuse_ino_t
    ctypedef struct fuse_req:
        pass
    ctypedef fuse_req *fuse_req_t
    struct fuse_session:
        pass
    struct fuse_loop_config:
        pass
    struct fuse_args:
        int argc
        char **argv
        int allocated
    struct fuse_conn_info:
        unsigned max_write
        unsigned max_readahead
        unsigned capable
        unsigned want
    struct fuse_file_info:
        int flags
        unsigned int direct_io
        unsigned int keep_cache
        uint64_t fh
    struct fuse_entry_param:
        fuse_ino_t ino
        uint64_t generation
        struct_stat attr
        double attr_timeout
        double entry_timeout
    struct fuse_lowlevel_ops:
        void (*init)(void *userdata, fuse_conn_info *conn) noexcept nogil
        void (*destroy)(void *userdata) noexcept nogil
        void (*lookup)(fuse_req_t req, fuse_ino_t parent, const char *name) noexcept nogil
        void (*getattr)(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept nogil
        void (*setattr)(fuse_req_t req, fuse_ino_t ino, struct_stat *attr, int to_set,
                        fuse_file_info *fi) noexcept nogil
        void (*open)(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept nogil
        void (*read)(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                     fuse_file_info *fi) noexcept nogil
        void (*write)(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                      fuse_file_info *fi) noexcept nogil
        void (*release)(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept nogil
        void (*fsync)(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info *fi) noexcept nogil
        void (*readdir)(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                        fuse_file_info *fi) noexcept nogil
        void (*statfs)(fuse_req_t req, fuse_ino_t ino) noexcept nogil
        void (*fallocate)(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                          fuse_file_info *fi) noexcept nogil
        void (*mknod)(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      dev_t rdev) noexcept nogil
        void (*mkdir)(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) noexcept nogil
        void (*unlink)(fuse_req_t req, fuse_ino_t parent, const char *name) noexcept nogil
        void (*rmdir)(fuse_req_t req, fuse_ino_t parent, const char *name) noexcept nogil
        void (*symlink)(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) noexcept nogil
        void (*rename)(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                       const char *newname, unsigned int flags) noexcept nogil
        void (*link)(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) noexcept nogil
        void (*create)(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                       fuse_file_info *fi) noexcept nogil
        void (*readlink)(fuse_req_t req, fuse_ino_t ino) noexcept nogil
        void (*getxattr)(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) noexcept nogil
        void (*listxattr)(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept nogil
        void (*setxattr)(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                         size_t size, int flags) noexcept nogil
        void (*removexattr)(fuse_req_t req, fuse_ino_t ino, const char *name) noexcept nogil

    int fuse_version() nogil
    void *fuse_req_userdata(fuse_req_t req) nogil
    int fuse_reply_err(fuse_req_t req, int err) nogil
    int fuse_reply_entry(fuse_req_t req, const fuse_entry_param *e) nogil
    int fuse_reply_attr(fuse_req_t req, const struct_stat *attr, double timeout) nogil
    int fuse_reply_open(fuse_req_t req, const fuse_file_info *fi) nogil
    int fuse_reply_write(fuse_req_t req, size_t count) nogil
    int fuse_reply_buf(fuse_req_t req, const char *buf, size_t size) nogil
    int fuse_reply_statfs(fuse_req_t req, const statvfs *stbuf) nogil
    int fuse_reply_readlink(fuse_req_t req, const char *link) nogil
    int fuse_reply_xattr(fuse_req_t req, size_t count) nogil
    size_t fuse_add_direntry(fuse_req_t req, char *buf, size_t bufsize, const char *name,
                             const struct_stat *stbuf, off_t off) nogil

    fuse_session *fuse_session_new(fuse_args *args, const fuse_lowlevel_ops *op, size_t op_size,
                                   void *userdata) nogil
    int fuse_session_mount(fuse_session *se, const char *mountpoint) nogil
    int fuse_session_loop_mt(fuse_session *se, fuse_loop_config *config) nogil
    void fuse_session_unmount(fuse_session *se) nogil
    void fuse_session_destroy(fuse_session *se) nogil
    int fuse_set_signal_handlers(fuse_session *se) nogil
    void fuse_remove_signal_handlers(fuse_session *se) nogil
    void fuse_opt_free_args(fuse_args *args) nogil
    fuse_loop_config *fuse_loop_cfg_create() nogil
    void fuse_loop_cfg_destroy(fuse_loop_config *config) nogil
    void fuse_loop_cfg_set_max_threads(fuse_loop_config *config, unsigned int value) nogil
