# pagewire test guest: a bare-metal multiboot (v1) kernel that dirties RAM
# at a chosen rate, so a host can check that a live migration of the
# guest's RAM loses nothing.  See README.md for the memory layout.
#
# 32-bit protected mode, flat segments, no paging, interrupts off.
# Assemble: as --32; link: ld -m elf_i386 -T link.ld (see build.sh).
# AT&T syntax.

# ---------------------------------------------------------------- constants

    .equ MB_MAGIC,      0x1BADB002      # multiboot v1 header magic
    .equ MB_FLAGS,      0x00000002      # bit 1: we want mem_lower/mem_upper
    .equ MB_BOOT_MAGIC, 0x2BADB002      # what the loader puts in eax

    .equ STATUS,        0x00200000      # status page (fixed ABI, 2 MiB)
    .equ CTR,           STATUS + 0x00   # u64 pages written so far
    .equ MAGIC,         STATUS + 0x08   # u32 'PWGS' once the rest is valid
    .equ IDX,           STATUS + 0x0C   # u32 index of the next page to write
    .equ RATE,          STATUS + 0x10   # u32 rate= in MB/s (0 = unlimited)
    .equ PAGES,         STATUS + 0x14   # u32 pages in the span
    .equ PASS,          STATUS + 0x18   # u32 full walks completed
    .equ FLAGS,         STATUS + 0x1C   # u32 bit0 limited, bit1 PIT, bit2 none
    .equ TICKS,         STATUS + 0x20   # u64 3.579545 MHz ticks while limited
    # private state (not ABI, but in RAM so it migrates with the guest)
    .equ CREDIT,        STATUS + 0x40   # u64 token bucket, bytes*3579545
    .equ CAP,           STATUS + 0x48   # u64 bucket size (0.1 s of credit)
    .equ RBPS,          STATUS + 0x50   # u32 rate in bytes/s (0 = unlimited)
    .equ LAST,          STATUS + 0x54   # u32 last timer reading
    .equ SPAN_MIB,      STATUS + 0x58   # u32 span= in MiB (0 = all RAM)
    .equ IDT,           STATUS + 0x80   # 3 gates (vectors 0..2), only NMI set

    .equ PWGS,          0x50574753      # "PWGS" read as a little-endian u32
    .equ SPAN_BASE,     0x00400000      # the dirtied span starts at 4 MiB
    .equ STACK_TOP,     STATUS          # stack grows down from 2 MiB

    .equ PM_TMR,        0x608           # ACPI PM timer: SeaBIOS puts PMBASE
                                        # at 0x600 on pc (PIIX4) and q35
    .equ PIT_CH0,       0x40            # fallback: 8254 PIT channel 0, at
    .equ PIT_CMD,       0x43            # 1193182 Hz = the PM timer's rate / 3
    .equ PM_HZ_TENTH,   357954          # 3579545 Hz / 10, for the bucket cap
    # cost of one page in credit units: 4096 bytes * 3579545 ticks/s
    .equ PAGE_COST_LO,  0x69E99000      # 4096 * 3579545 = 0x3_69E9_9000
    .equ PAGE_COST_HI,  0x3

    .equ CODE_SEL,      0x08
    .equ DATA_SEL,      0x10

# ---------------------------------------------------------- multiboot header
# Must sit in the first 8 KiB of the file, 4-byte aligned; link.ld puts
# this section first.  No a.out kludge (bit 16): QEMU loads the ELF itself.

    .section .multiboot, "a"
    .balign 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

# --------------------------------------------------------------------- code

    .text
    .code32
    .globl _start
_start:
    cli                         # multiboot leaves IF=0; make sure
    cld                         # string ops go upwards
    movl $STACK_TOP, %esp
    movl %eax, %ebp             # keep the boot magic and the info pointer
                                # (ebx) across the setup below

    # Our own GDT: multiboot says the loader's may be gone, and the NMI
    # gate below needs a valid code selector.
    lgdt gdt_desc
    ljmp $CODE_SEL, $1f
1:  movw $DATA_SEL, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss

    # Clear the status page first, magic included, so a host never sees
    # 'PWGS' over fields left from an earlier boot.
    movl $STATUS, %edi
    xorl %eax, %eax
    movl $1024, %ecx
    rep stosl

    # IDT with only an NMI gate (vector 2, handler just returns), so an
    # NMI (QMP inject-nmi) does not triple-fault and reset the guest.
    movl $nmi_handler, %eax
    movw %ax, IDT + 16          # offset 15..0
    movw $CODE_SEL, IDT + 18
    movw $0x8E00, IDT + 20      # present, DPL 0, 32-bit interrupt gate
    shrl $16, %eax
    movw %ax, IDT + 22          # offset 31..16
    lidt idt_desc

    # -------------------------------------------- multiboot info -> settings
    movl $0x01000000, %eax      # no memory info: assume 16 MiB of RAM
    cmpl $MB_BOOT_MAGIC, %ebp
    jne .Lmem_end               # not booted by multiboot: defaults only
    testl $1 << 0, (%ebx)       # mem_lower/mem_upper valid?
    jz 2f
    movl 8(%ebx), %eax          # mem_upper: KiB of RAM above 1 MiB
    cmpl $0x3FFBFC, %eax        # keep (mem_upper + 1024) * 1024 < 4 GiB
    jbe 1f
    movl $0x3FFBFC, %eax
1:  addl $1024, %eax
    shll $10, %eax              # end of RAM in bytes
2:  testl $1 << 2, (%ebx)       # command line present?
    jz .Lmem_end
    pushl %eax
    movl 16(%ebx), %esi
    call parse_cmdline          # sets RATE and SPAN_MIB
    popl %eax

.Lmem_end:
    # pages in the span: all RAM from 4 MiB up, or span= MiB if smaller
    subl $SPAN_BASE, %eax
    jbe 3f                      # less than 4 MiB of RAM: one page anyway
    shrl $12, %eax
    jnz 1f
3:  movl $1, %eax
1:  movl SPAN_MIB, %edx
    testl %edx, %edx
    jz 2f                       # span= not given: everything
    movl %eax, %ecx
    shrl $8, %ecx               # whole MiB available
    cmpl %ecx, %edx
    jae 2f                      # asked for more than there is: everything
    shll $8, %edx               # MiB -> 4 KiB pages
    movl %edx, %eax
2:  movl %eax, PAGES

    # --------------------------------------------------------- rate limit
    # Token bucket in units of bytes*3579545: each PM timer tick adds
    # RBPS, each page costs 4096*3579545.  Same as "pages allowed =
    # ticks * rate*10^6 / (3579545*4096)", kept as a bounded difference
    # so it fits in 64 bits, with a cap of 0.1 s so a guest that falls
    # behind (TCG too slow, host busy) does not bank an unbounded burst.
    movl RATE, %eax
    movl $1000000, %ecx
    mull %ecx                   # bytes/s; above 4294 MB/s it overflows:
    jc .Lunlimited              # treat as unlimited
    testl %eax, %eax
    jz .Lunlimited              # rate=0 or absent: as fast as possible
    movl %eax, RBPS
    movl $PM_HZ_TENTH, %ecx
    mull %ecx
    movl %eax, CAP
    movl %edx, CAP + 4

    # Is the PM timer there?  It ticks every 279 ns; if a million reads
    # see no change (e.g. -machine pc,acpi=off), use the PIT instead.
    call timer_ticking
    jnz 2f
    movl $2, FLAGS              # FLAGS bit 1: timer_delta reads the PIT
    movb $0x34, %al             # channel 0, lo/hi byte, mode 2 (rate
    outb %al, $PIT_CMD          # generator), binary, count 65536: a
    xorl %eax, %eax             # free-running 16-bit down-counter
    outb %al, $PIT_CH0          # (IRQ 0 fires, but IF=0)
    outb %al, $PIT_CH0
    call timer_ticking
    jnz 2f
    movl $4, FLAGS              # no timer at all: run unlimited
    movl $0, RBPS
    jmp .Lunlimited
2:  orl $1, FLAGS

.Lunlimited:
    movl $PWGS, MAGIC           # last: the fields above are now valid
    movw $0xE9, %dx             # optional debug char: -debugcon file:x
    movb $'G', %al
    outb %al, %dx

# ---------------------------------------------------------------- main loop
main_loop:
    cmpl $0, PASS
    je write_page               # first walk: fill RAM flat out, as a booted
                                # OS's memory is full; rate= from then on
    cmpl $0, RBPS
    je write_page               # unlimited: no timer reads at all

wait:
    call timer_delta
    addl %eax, TICKS
    adcl $0, TICKS + 4
    mull RBPS                   # delta * bytes/s < 2^56
    addl CREDIT, %eax
    adcl CREDIT + 4, %edx
    cmpl CAP + 4, %edx          # clamp the bucket to CAP
    jb 1f
    ja 2f
    cmpl CAP, %eax
    jbe 1f
2:  movl CAP, %eax
    movl CAP + 4, %edx
1:  subl $PAGE_COST_LO, %eax    # enough credit for one page?
    sbbl $PAGE_COST_HI, %edx
    jnc 3f
    addl $PAGE_COST_LO, %eax    # no: put it back and poll again
    adcl $PAGE_COST_HI, %edx
    movl %eax, CREDIT
    movl %edx, CREDIT + 4
    pause
    jmp wait
3:  movl %eax, CREDIT           # yes: page paid for
    movl %edx, CREDIT + 4

write_page:
    movl IDX, %edi
    shll $12, %edi
    addl $SPAN_BASE, %edi       # edi = physical address of the page
    cmpl $0, PASS
    jne 1f
    # First walk: fill the whole page, as an OS would, so no RAM in the
    # span stays zero (a migration cannot skip it as a zero page).
    movl %edi, %eax
    xorl $0xA5A5A5A5, %eax      # pattern from the page address, never 0
    movl $1024, %ecx
    rep stosl
    subl $4096, %edi
1:  # Stamp: the counter value in the first 8 bytes, and its low dword
    # again at 8 + 16*(pass mod 256), so later walks change more than
    # one place in the page.
    movl CTR, %eax
    movl CTR + 4, %edx
    movl %eax, (%edi)
    movl %edx, 4(%edi)
    movl PASS, %ecx
    andl $0xFF, %ecx
    shll $4, %ecx
    movl %eax, 8(%edi, %ecx)
    # Count the page only after it is written: a host that sees counter
    # C knows pages with stamps < C are in RAM.
    addl $1, CTR
    adcl $0, CTR + 4
    movl IDX, %eax
    incl %eax
    cmpl PAGES, %eax
    jb 2f
    xorl %eax, %eax             # end of the span: wrap, next pass
    incl PASS
2:  movl %eax, IDX
    jmp main_loop

# ---------------------------------------------------------- parse_cmdline
# In: esi = NUL-terminated command line ("<kernel path> rate=50 span=64").
# Words are separated by spaces (any byte <= ' ').  Sets RATE from
# "rate=N" and SPAN_MIB from "span=N"; other words, and those without
# digits after '=', are ignored.  Clobbers eax, ecx, edx, esi, edi.
parse_cmdline:
.Lsep:
    movb (%esi), %al
    testb %al, %al
    jz .Ldone
    cmpb $' ', %al
    ja .Lword
    incl %esi
    jmp .Lsep
.Lword:
    cmpb $'=', 4(%esi)          # (may read past the NUL: harmless RAM)
    jne .Lrest
    cmpl $0x65746172, (%esi)    # "rate"
    je 1f
    cmpl $0x6E617073, (%esi)    # "span"
    jne .Lrest
    addl $5, %esi
    call parse_dec
    je .Lrest
    movl %eax, SPAN_MIB
    jmp .Lrest
1:  addl $5, %esi
    call parse_dec
    je .Lrest
    movl %eax, RATE
.Lrest:                         # skip to the end of the word
    movb (%esi), %al
    cmpb $' ', %al
    jbe .Lsep                   # separator or NUL: .Lsep sorts it out
    incl %esi
    jmp .Lrest
.Ldone:
    ret

# In: esi = text.  Out: eax = decimal value (saturates at 0xFFFFFFFF),
# esi = first non-digit, ZF=1 if there were no digits.
parse_dec:
    xorl %eax, %eax
    movl %esi, %edi
1:  movzbl (%esi), %ecx
    subl $'0', %ecx
    cmpl $9, %ecx
    ja 3f
    movl $10, %edx
    mull %edx
    jc 2f                       # overflow: saturate
    addl %ecx, %eax
    jnc 4f
2:  movl $0xFFFFFFFF, %eax
4:  incl %esi
    jmp 1b
3:  cmpl %edi, %esi
    ret

# --------------------------------------------------------------- timer
# Out: eax = ticks (3.579545 MHz) since the previous call; LAST updated.
# Wrap-safe as long as calls are less than a wrap apart (PM timer: 24 bit,
# 4.69 s; PIT: 16 bit, 54.9 ms); the main loop polls every few us.
# Clobbers ecx, edx.
timer_delta:
    testl $2, FLAGS
    jnz 1f
    movw $PM_TMR, %dx
    inl %dx, %eax               # counts up
    movl %eax, %ecx
    subl LAST, %eax
    movl %ecx, LAST
    andl $0xFFFFFF, %eax
    ret
1:  xorl %eax, %eax
    outb %al, $PIT_CMD          # latch channel 0's count
    inb $PIT_CH0, %al           # low byte, then high byte
    movb %al, %cl
    inb $PIT_CH0, %al
    movb %al, %ch
    movzwl %cx, %ecx
    movl LAST, %eax
    subl %ecx, %eax             # counts down: elapsed = last - now
    movl %ecx, LAST
    andl $0xFFFF, %eax
    leal (%eax, %eax, 2), %eax  # PIT ticks * 3 = PM timer ticks
    ret

# Out: ZF=0 if timer_delta sees time pass within a million reads.
# Clobbers eax, ebx, ecx, edx.
timer_ticking:
    call timer_delta            # sets LAST
    movl $1000000, %ebx
1:  call timer_delta
    testl %eax, %eax
    jnz 2f
    decl %ebx
    jnz 1b
2:  ret

# An NMI interrupts the walk between two instructions; just resume it.
nmi_handler:
    iret

# ----------------------------------------------------------- descriptors
    .balign 8
gdt:
    .quad 0                     # null
    .quad 0x00CF9B000000FFFF    # 0x08 code: base 0, 4 GiB, 32-bit, accessed
    .quad 0x00CF93000000FFFF    # 0x10 data: base 0, 4 GiB, accessed
gdt_end:
    # ("accessed" preset so the CPU never writes back into the image)

gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt

idt_desc:
    .word 3 * 8 - 1             # vectors 0..2; 0 and 1 not present
    .long IDT
