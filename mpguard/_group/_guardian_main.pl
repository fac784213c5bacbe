# The guardian, for a perl: what _guardian_main.py does, in the interpreter
# that starts fastest.  Run as `perl -f _guardian_main.pl OWNER_PID
# LIFELINE_FD GRACE` by _guardian.command when a perl is on PATH.
#
# Why a second implementation: the guardian starts with every guarded
# program, beside its first pool, and on a small machine its start is CPU
# taken from the owner's first workers.  A `python -I -S` takes 15 to 17 ms
# of CPU to start, a perl 2 ms (getrusage(RUSAGE_CHILDREN), medians of 30
# starts); its resident memory is 5 MiB, 0.4 MiB of it its own, against
# 8.4 and 2.6 for the python.  Perl 5 builtins only: no module is loaded,
# so a bare `perl-base` (Debian's Essential set) runs it.
#
# Keep the two implementations in step: the same argv, the same checks in
# the same order, the same exit statuses (tests/test_guardian.py runs the
# same cases on both).

# The guarded signals: a group-wide SIGTERM from a graceful teardown must not
# take the leader down before the workers.  The owner spawned us with them
# blocked, and they stay blocked (the python guardian unblocks them; here
# that would take the POSIX module, 4 ms to load): ignored, a pending one is
# discarded, and SIGKILL cannot be blocked.
$SIG{$_} = 'IGNORE' for qw(TERM INT HUP QUIT USR1 USR2);

my ($owner, $lifeline, $grace) = @ARGV;
exit 1 unless defined $lifeline && $owner =~ /^\d+$/ && $lifeline =~ /^\d+$/;
$grace = defined $grace ? $grace + 0 : 0;    # "0.5", "1e-05": repr(float)
# fdopen, not a dup ("<&="): the fd stays the one select() watches.
open(my $life, '<&=', $lifeline) or exit 1;

# Never kill a group we do not lead: that could be the shell's.
exit 2 if getpgrp() != $$;

# pidfd_open(2) is system call 434 on every Linux architecture (the generic
# table).  -1 (ENOSYS before Linux 5.3, ESRCH if the owner is gone) leaves
# the lifeline and getppid() to tell.
my $pidfd = $^O eq 'linux' ? syscall(434, $owner + 0, 0) : -1;
my $rin = '';
vec($rin, $lifeline, 1) = 1;
vec($rin, $pidfd, 1) = 1 if $pidfd >= 0;

# Open first, then check: if getppid() still is the owner, the pidfd names
# the owner and not a process that recycled its pid.
while (getppid() == $owner) {
    my $n = select(my $rout = $rin, undef, undef, $pidfd >= 0 ? undef : 1.0);
    if ($n < 0) {
        # EINTR (4) cannot come, every signal we may get being ignored; any
        # other error makes this a poll of getppid() once a second, as
        # without a pidfd, rather than a spin.
        select(undef, undef, undef, 1.0) unless $! == 4;
        next;
    }
    next if $n == 0;    # the 1 s tick without a pidfd: check getppid()
    last if $pidfd >= 0 && vec($rout, $pidfd, 1);
    if (vec($rout, $lifeline, 1)) {
        last unless sysread($life, my $buf, 64);    # EOF (or an error):
                                                    # the owner exited or released us
    }
}
end_group($grace);
exit 0;

sub end_group {
    my ($grace) = @_;
    if ($grace > 0) {
        # We ignore SIGTERM ourselves.  A member that handles it gets the
        # grace to clean up; the wait ends as soon as the group is empty
        # (only /proc can tell: we are a member ourselves).
        kill '-TERM', $$;
        my $start = uptime();
        my $ticks = int($grace / 0.01);
        while (1) {
            my $left = others_left();
            last if $left == 0;
            if (defined $start) {
                last if uptime() - $start >= $grace;
            } else {    # no /proc/uptime: count the sleeps
                last if $ticks-- <= 0;
            }
            select(undef, undef, undef, 0.01);
        }
    }
    kill '-KILL', $$;
}

# Seconds since boot, to 10 ms, from /proc/uptime: a monotonic clock without
# Time::HiRes (not in perl-base).  undef without /proc.
sub uptime {
    open(my $f, '<', '/proc/uptime') or return undef;
    my $line = <$f>;
    close $f;
    return defined $line && $line =~ /^([0-9.]+)/ ? $1 : undef;
}

# 1 if a live process other than us is in our group, 0 if none, -1 if /proc
# cannot tell (then the caller waits out the grace).
sub others_left {
    opendir(my $d, '/proc') or return -1;
    while (defined(my $name = readdir $d)) {
        next unless $name =~ /^\d+$/ && $name != $$;
        open(my $f, '<', "/proc/$name/stat") or next;
        my $data = <$f>;
        close $f;
        next unless defined $data;
        my @fields = split ' ', substr($data, rindex($data, ')') + 2);
        return 1 if @fields > 2 && $fields[2] == $$ && $fields[0] ne 'Z' && $fields[0] ne 'X';
    }
    return 0;
}

