;; Counts int16 codes into four interleaved tables of i32 counts: the inner loop of exact
;; in-graph histograms (one count per activation value), used by code-counts.ts. `npm run build`
;; assembles it into count-codes.wasm next to the compiled code (scripts/copy-assets.js, wabt).
;;
;; Memory: the caller puts the tables at address 0 (4 x $table i32 counts) and the codes after
;; them, and grows the memory to fit.
(module
  (memory (export "memory") 1)

  ;; count(codes, n, table, offset): for codes[0 .. n) (n a multiple of 4, codes 4-byte aligned),
  ;; code i goes to table i mod 4 at index (code + offset) & 0xffff. Four tables so that runs of
  ;; equal codes do not wait on each other's increments; the codes are read two per 32-bit load.
  (func (export "count") (param $codes i32) (param $n i32) (param $table i32) (param $offset i32)
    (local $end i32) (local $x i32) (local $y i32) (local $slot i32)
    (local $t1 i32) (local $t2 i32) (local $t3 i32)
    ;; byte addresses of tables 1-3 (table 0 is at 0)
    (local.set $t1 (i32.shl (local.get $table) (i32.const 2)))
    (local.set $t2 (i32.shl (local.get $t1) (i32.const 1)))
    (local.set $t3 (i32.add (local.get $t1) (local.get $t2)))
    (local.set $end (i32.add (local.get $codes) (i32.shl (local.get $n) (i32.const 1))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $codes) (local.get $end)))
        (local.set $x (i32.load (local.get $codes)))
        (local.set $y (i32.load offset=4 (local.get $codes)))
        ;; low half of x -> table 0
        (local.set $slot (i32.shl (i32.and (i32.add (local.get $x) (local.get $offset)) (i32.const 0xffff)) (i32.const 2)))
        (i32.store (local.get $slot) (i32.add (i32.load (local.get $slot)) (i32.const 1)))
        ;; high half of x -> table 1
        (local.set $slot (i32.add (local.get $t1)
          (i32.shl (i32.and (i32.add (i32.shr_u (local.get $x) (i32.const 16)) (local.get $offset)) (i32.const 0xffff)) (i32.const 2))))
        (i32.store (local.get $slot) (i32.add (i32.load (local.get $slot)) (i32.const 1)))
        ;; low half of y -> table 2
        (local.set $slot (i32.add (local.get $t2)
          (i32.shl (i32.and (i32.add (local.get $y) (local.get $offset)) (i32.const 0xffff)) (i32.const 2))))
        (i32.store (local.get $slot) (i32.add (i32.load (local.get $slot)) (i32.const 1)))
        ;; high half of y -> table 3
        (local.set $slot (i32.add (local.get $t3)
          (i32.shl (i32.and (i32.add (i32.shr_u (local.get $y) (i32.const 16)) (local.get $offset)) (i32.const 0xffff)) (i32.const 2))))
        (i32.store (local.get $slot) (i32.add (i32.load (local.get $slot)) (i32.const 1)))
        (local.set $codes (i32.add (local.get $codes) (i32.const 8)))
        (br $next))))
)
