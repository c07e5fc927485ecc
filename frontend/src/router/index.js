import { createRouter, createWebHistory } from 'vue-router'
import { nextTick } from 'vue'
import { useAuthStore } from '@/stores/auth'

export const routes = [
  {
    path: '/login',
    name: 'login',
    component: () => import('@/views/LoginView.vue'),
    meta: { public: true, title: 'Sign in' },
  },
  { path: '/', name: 'home', redirect: () => useAuthStore().homeRoute() },
  {
    path: '/dashboard',
    name: 'dashboard',
    component: () => import('@/views/DashboardView.vue'),
    meta: { cap: 'dashboard', title: 'Dashboard' },
  },
  {
    path: '/studies',
    name: 'studies',
    component: () => import('@/views/StudiesView.vue'),
    meta: { cap: 'studies', title: 'Studies' },
  },
  {
    path: '/studies/:id',
    name: 'study',
    component: () => import('@/views/StudyDetailView.vue'),
    props: true,
    meta: { cap: 'studies', title: 'Study', nav: 'studies' },
  },
  {
    path: '/queue',
    name: 'queue',
    component: () => import('@/views/QueueView.vue'),
    meta: { cap: 'queue', title: 'Queue' },
  },
  {
    path: '/destinations',
    name: 'destinations',
    component: () => import('@/views/DestinationsView.vue'),
    meta: { cap: 'destinations', title: 'Destinations' },
  },
  {
    path: '/rules',
    name: 'rules',
    component: () => import('@/views/RulesView.vue'),
    meta: { cap: 'rules', title: 'Routing rules' },
  },
  {
    path: '/users',
    name: 'users',
    component: () => import('@/views/UsersView.vue'),
    meta: { cap: 'users', title: 'Users' },
  },
  {
    path: '/settings',
    name: 'settings',
    component: () => import('@/views/SettingsView.vue'),
    meta: { cap: 'settings', title: 'Settings' },
  },
  {
    path: '/audit',
    name: 'audit',
    component: () => import('@/views/AuditView.vue'),
    meta: { cap: 'audit', title: 'Audit log' },
  },
  {
    path: '/account',
    name: 'account',
    component: () => import('@/views/AccountView.vue'),
    meta: { title: 'My account' },
  },
  {
    path: '/forbidden',
    name: 'forbidden',
    component: () => import('@/views/ForbiddenView.vue'),
    meta: { title: 'Not allowed' },
  },
  {
    path: '/:pathMatch(.*)*',
    name: 'not-found',
    component: () => import('@/views/NotFoundView.vue'),
    meta: { title: 'Page not found' },
  },
]

/** The navigation guard, exported for tests. */
export function guard(to) {
  const auth = useAuthStore()
  if (to.meta.public) {
    return to.name === 'login' && auth.isAuthenticated ? auth.homeRoute() : true
  }
  if (!auth.isAuthenticated) {
    const query = to.fullPath && to.fullPath !== '/' ? { redirect: to.fullPath } : {}
    return { name: 'login', query }
  }
  if (to.meta.cap && !auth.can(to.meta.cap)) {
    return { name: 'forbidden', query: { from: to.fullPath } }
  }
  return true
}

export function createAppRouter(history = createWebHistory('/')) {
  const router = createRouter({
    history,
    routes,
    scrollBehavior: (to, from, saved) => saved ?? (to.path !== from.path ? { top: 0 } : undefined),
  })
  router.beforeEach(guard)
  router.afterEach((to, from) => {
    if (typeof document === 'undefined') return
    document.title = to.meta.title ? `${to.meta.title} · dicom-gw` : 'dicom-gw'
    // move keyboard and screen-reader focus to the new page's heading (not on query-only changes)
    if (from.matched.length && to.path !== from.path) {
      nextTick(() => document.getElementById('page-heading')?.focus({ preventScroll: true }))
    }
  })
  return router
}
