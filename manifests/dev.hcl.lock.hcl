# This file is maintained by builder build; it records the digests of
# local inputs. Commit it. Run builder build -update-lock after changing an input.

input "payload.webui" {
  sha256 = "4e3dfa91bd0e9f4f5768dde82ea21a75c53739fe74111d1418a5ec6bf6d72fdc"
}
