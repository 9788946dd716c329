# This file is maintained by builder build; it records the digests of
# local inputs. Commit it. Run builder build -update-lock after changing an input.

input "payload.webui" {
  sha256 = "1889fdb75ad7b21e1120f6ad22f2b6a48ddb11c7db6ddb4594bb6a101697446e"
}
