# nameko runs on eventlet; plain pytest no longer monkey-patches for it, and the
# patch must come before anything imports socket or threading.
import eventlet

eventlet.monkey_patch()
