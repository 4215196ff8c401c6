# Frozen into every microfang firmware: the device code as the package `microfang.firmware`
# (frozen/microfang/firmware is a link to the repo's firmware/ folder).
package("microfang", base_path="frozen")
